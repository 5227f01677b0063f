"""The models the service serves: every bundle under the model directory, newest version first.

Layout: ``MODEL_DIR/<name>/v<k>/`` is version k of model <name>; ``MODEL_DIR/<name>/`` may also be a
bundle itself (what ``tssynth train --out models/NAME`` makes), which counts as version 0 so that any
version trained later by the service supersedes it.

Hot swap without locks: a request looks up a ``ServedModel`` once and keeps that object, so a
version installed meanwhile (a dict assignment on the event loop) never changes a request halfway.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.errors import ApiError
from model_core.bundle import BundleError, ModelBundle, is_bundle_dir, load_bundle

log = logging.getLogger(__name__)

#: Model names are path components: keep them to characters that cannot escape the model directory.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION_DIR = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: int
    path: Path
    bundle: ModelBundle
    #: Every version found on disk (loadable or not), ascending.
    versions: tuple[int, ...]


def scan_model_dir(model_dir: Path) -> dict[str, dict[int, Path]]:
    """name -> {version: bundle directory}, for every bundle-shaped directory (nothing is loaded)."""
    found: dict[str, dict[int, Path]] = {}
    if not model_dir.is_dir():
        return found
    for child in sorted(model_dir.iterdir()):
        if not child.is_dir() or not MODEL_NAME.match(child.name):
            continue
        versions = {0: child} if is_bundle_dir(child) else {}
        for sub in child.iterdir():
            match = _VERSION_DIR.match(sub.name)
            if match and sub.is_dir() and is_bundle_dir(sub):
                versions[int(match[1])] = sub
        if versions:
            found[child.name] = versions
    return found


class ModelRegistry:
    def __init__(self, model_dir: Path, loader: Callable[[Path], ModelBundle] = load_bundle):
        self.model_dir = model_dir
        self._loader = loader
        self._models: dict[str, ServedModel] = {}

    def load_all(self) -> None:
        """Load the newest loadable version of every model; a broken bundle is logged and skipped."""
        for name, versions in scan_model_dir(self.model_dir).items():
            for version in sorted(versions, reverse=True):
                try:
                    bundle = self._loader(versions[version])
                except (BundleError, OSError, ValueError) as exc:
                    log.error("skipping model %s v%d at %s: %s", name, version, versions[version], exc)
                    continue
                self.install(name, version, bundle, versions[version], tuple(sorted(versions)))
                log.info("loaded model %s v%d from %s", name, version, versions[version])
                break

    def install(
        self, name: str, version: int, bundle: ModelBundle, path: Path, versions: tuple[int, ...] | None = None
    ) -> ServedModel:
        known = versions if versions is not None else tuple(sorted({*self._versions_of(name), version}))
        served = ServedModel(name=name, version=version, path=path, bundle=bundle, versions=known)
        self._models[name] = served
        return served

    def get(self, name: str) -> ServedModel:
        served = self._models.get(name)
        if served is None:
            raise ApiError(404, "model_not_found", f"no model named '{name}'", {"available": self.names()})
        return served

    def names(self) -> list[str]:
        return sorted(self._models)

    def all(self) -> list[ServedModel]:
        return [self._models[name] for name in self.names()]

    def __len__(self) -> int:
        return len(self._models)

    def next_version(self, name: str) -> int:
        """One above every ``v<k>`` directory on disk, broken ones included, so none is ever overwritten."""
        taken = [0]
        folder = self.model_dir / name
        if folder.is_dir():
            taken += [int(m[1]) for sub in folder.iterdir() if (m := _VERSION_DIR.match(sub.name))]
        return max(taken) + 1

    def _versions_of(self, name: str) -> tuple[int, ...]:
        served = self._models.get(name)
        return served.versions if served is not None else ()
