"""A trained model as one directory: save atomically, load with validation, never unpickle.

Layout::

    config.json           the pipeline configuration
    schema.json           features, kinds, categories, timestamp
    transforms.json/.npz  fitted transforms
    pools.npz             trend contexts, bootstrap residuals with their trends and states, residual scaling
    trend.safetensors     stage 1 weights (absent when the trend is disabled)
    denoiser.safetensors  stage 2 weights; denoiser_ema.safetensors the EMA copy used for sampling
    manifest.json         format version, provenance, training summary, validation diagnostics, and the
                          sha256 of every file above (so a corrupted or edited file is refused)

``pools.npz`` holds a sample of *transformed training rows* (the rollout contexts) and of training
residuals: a bundle is as sensitive as the data it was trained on, and the service never serves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model_core.backbones import ResidualDenoiser
from model_core.config import ConfigError, TSSynthConfig
from model_core.couplings import state_value_ranges
from model_core.schema import TableSchema
from model_core.transforms import FittedTransforms
from model_core.trend import TemporalGRUGenerator

# 2: pools.npz holds the trend of each pooled residual; 3: denoiser sees the next trend; 4: stage 1 models the
# discrete states (pools.npz holds the contexts' and the residuals' states); 5: stage 1 reads calendar features
# (pools.npz holds the contexts' times)
FORMAT_VERSION = 5
MANIFEST = "manifest.json"

#: Settings added to the config while format 5 stood, with the value a bundle saved before them was trained
#: and sampled with. Its config.json lacks the key, and today's default would change its output (or, for
#: ``state_lead``, ask for a weight it does not have).
_SETTINGS_BEFORE_THEY_EXISTED = {
    ("trend", "state_lead"): False,
    ("trend", "swap_innovations"): 0.0,
    ("sampling", "strength"): 1.0,
    ("sampling", "follow_couplings"): False,
    ("sampling", "avoid_replay"): False,
}


#: How far inside the model-space interval of a coupling generation keeps a value (``state_bounds``).
MODEL_SPACE_MARGIN = 1e-3


class BundleError(Exception):
    """A model directory that cannot be used; the message says which file and why."""


@dataclass
class Pools:
    """Arrays the generator needs besides weights, all in the model's (transformed) space."""

    contexts: np.ndarray  # [N, C, Dc] real steps that warm up trend rollouts
    context_tokens: np.ndarray  # [N, C, Dd] their discrete states (indices)
    context_times: np.ndarray  # [N, C] their wall-clock epoch seconds (float64; zeros without a timestamp)
    residuals: np.ndarray  # [M, Dc] training residuals, bootstrapped as rollout noise
    residual_trends: np.ndarray  # [M, Dc] the trend at each of those residuals' rows
    residual_states: np.ndarray  # [M, Dd] the discrete states at those rows
    residual_mean: np.ndarray  # [Dc] the diffusion models (residual - mean) / std
    residual_std: np.ndarray  # [Dc]
    clip: float  # bound on predicted normalised residuals during sampling
    # The training row of each pooled residual [M] and of each context's last step [N] (int64), so a rollout
    # can avoid continuing the real series (``sampling.avoid_replay``). None in bundles saved before them.
    residual_rows: np.ndarray | None = None
    context_rows: np.ndarray | None = None

    def to_arrays(self) -> dict[str, np.ndarray]:
        rows = {} if self.residual_rows is None or self.context_rows is None else {
            "residual_rows": self.residual_rows,
            "context_rows": self.context_rows,
        }
        return rows | {
            "contexts": self.contexts,
            "context_tokens": self.context_tokens,
            "context_times": self.context_times,
            "residuals": self.residuals,
            "residual_trends": self.residual_trends,
            "residual_states": self.residual_states,
            "residual_mean": self.residual_mean,
            "residual_std": self.residual_std,
            "clip": np.array(self.clip),
        }


@dataclass
class ModelBundle:
    config: TSSynthConfig
    schema: TableSchema
    transforms: FittedTransforms
    trend: TemporalGRUGenerator | None
    denoiser: ResidualDenoiser
    ema: ResidualDenoiser
    pools: Pools
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.ema.parameters()).device

    @cached_property
    def state_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The model-space interval [sum(n_categories), Dc] each discrete state allows each continuous
        feature under the schema's couplings (``couplings.state_value_ranges``), or None without any."""
        if not (self.schema.couplings or self.schema.range_couplings) or not self.transforms.continuous:
            return None
        transforms = self.transforms
        low, high = state_value_ranges(
            self.schema.couplings,
            self.schema.range_couplings,
            transforms.continuous,
            (transforms.low, transforms.high),
            {name: list(self.schema.feature(name).levels or []) for name in transforms.discrete},
        )
        z_low, z_high = transforms.model_intervals(low, high)
        # Inward by a hair: the generator works in float32, and a value placed on an edge must not come
        # out a rounding error beyond it (the output repair would then still move it).
        margin = np.minimum(MODEL_SPACE_MARGIN, (z_high - z_low) / 4)
        return z_low + np.where(np.isfinite(z_low), margin, 0.0), z_high - np.where(np.isfinite(z_high), margin, 0.0)

    def with_sampling(self, **settings: Any) -> ModelBundle:
        """The same networks under other ``sampling`` settings (strength, sampler, steps, ...)."""
        return replace(self, config=self.config.with_overrides({"sampling": settings}))


def build_networks(
    config: TSSynthConfig, schema: TableSchema, n_continuous: int, n_categories: list[int]
) -> tuple[TemporalGRUGenerator | None, ResidualDenoiser, ResidualDenoiser]:
    """Fresh (trend, denoiser, ema) for a config and a schema's feature counts and calendar cycles."""
    trend = None
    if config.trend.enabled and n_continuous > 0:
        states = n_categories if config.trend.discrete_states else []
        trend = TemporalGRUGenerator(
            n_continuous,
            config.trend.hidden_size,
            config.trend.num_layers,
            states,
            2 * len(trend_calendar_periods(config, schema)),
            state_lead=config.trend.state_lead,
        )
    d = config.diffusion

    def denoiser() -> ResidualDenoiser:
        return ResidualDenoiser(
            n_continuous, n_categories, d.hidden_size, d.num_layers, d.backbone_type, d.num_heads, d.dropout
        )

    return trend, denoiser(), denoiser()


def trend_calendar_periods(config: TSSynthConfig, schema: TableSchema) -> list[float]:
    """The calendar cycles stage 1 reads: the schema's, unless ``trend.calendar`` is off."""
    return list(schema.calendar_periods) if config.trend.calendar else []


def is_bundle_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def save_bundle(bundle: ModelBundle, out_dir: str | Path) -> Path:
    """Write ``bundle`` to ``out_dir`` (which must not exist yet) atomically.

    Everything goes to a hidden sibling directory first, which is renamed into place only when complete:
    a crash or a full disk leaves either no model or a whole one, never half of one.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise BundleError(f"{out_dir} already exists; choose a new name or remove it first")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        bundle.config.save(tmp / "config.json")
        (tmp / "schema.json").write_text(bundle.schema.model_dump_json(indent=2) + "\n")
        bundle.transforms.save(tmp)
        with open(tmp / "pools.npz", "wb") as handle:
            np.savez(handle, **bundle.pools.to_arrays())  # type: ignore[arg-type]
        if bundle.trend is not None:
            save_file(_cpu_state(bundle.trend), str(tmp / "trend.safetensors"))
        save_file(_cpu_state(bundle.denoiser), str(tmp / "denoiser.safetensors"))
        save_file(_cpu_state(bundle.ema), str(tmp / "denoiser_ema.safetensors"))
        manifest = dict(bundle.manifest)
        manifest["format_version"] = FORMAT_VERSION
        manifest["files"] = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
        for path in tmp.iterdir():
            _fsync(path)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle.manifest, bundle.path = manifest, out_dir
    return out_dir


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> ModelBundle:
    """Load and validate a bundle; any problem is a ``BundleError`` naming the file."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such model directory")
    manifest = _read_manifest(path)
    missing = [name for name in manifest["files"] if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    for name, digest in manifest["files"].items():
        if _sha256(path / name) != digest:
            raise BundleError(f"{path}: {name} is corrupted (checksum mismatch)")
    try:
        config = TSSynthConfig.load(path / "config.json", missing=_SETTINGS_BEFORE_THEY_EXISTED)
        schema = TableSchema.model_validate_json((path / "schema.json").read_text())
        transforms = FittedTransforms.load(path, schema)
        with np.load(path / "pools.npz", allow_pickle=False) as arrays:
            pools = Pools(
                contexts=arrays["contexts"],
                context_tokens=arrays["context_tokens"],
                context_times=arrays["context_times"],
                residuals=arrays["residuals"],
                residual_trends=arrays["residual_trends"],
                residual_states=arrays["residual_states"],
                residual_mean=arrays["residual_mean"],
                residual_std=arrays["residual_std"],
                clip=float(arrays["clip"]),
                residual_rows=arrays["residual_rows"] if "residual_rows" in arrays.files else None,
                context_rows=arrays["context_rows"] if "context_rows" in arrays.files else None,
            )
        trend, denoiser, ema = build_networks(config, schema, len(transforms.continuous), transforms.n_categories)
        if trend is not None:
            trend.load_state_dict(load_file(str(path / "trend.safetensors")))
        denoiser.load_state_dict(load_file(str(path / "denoiser.safetensors")))
        ema.load_state_dict(load_file(str(path / "denoiser_ema.safetensors")))
    except (ConfigError, ValidationError, ValueError, KeyError, OSError, RuntimeError, SafetensorError) as exc:
        raise BundleError(f"{path}: cannot load model: {exc}") from exc
    for module in (trend, denoiser, ema):
        if module is not None:
            module.to(device).eval()
    return ModelBundle(config, schema, transforms, trend, denoiser, ema, pools, manifest, path)


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    if not file.is_file():
        raise BundleError(f"{path}: not a model (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: {MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{path}: {MANIFEST} lacks its file list")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format {version!r} is not supported (this build reads {FORMAT_VERSION})")
    return manifest


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
