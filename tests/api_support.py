"""Shared by the API tests: one tiny trained model per test process, and an app around a copy of it.

Training even a tiny model costs seconds, so it happens once (``functools.cache``) and every test
gets its own copy of the bundle directory: tests that install versions or corrupt files cannot
disturb each other.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from app.settings import Settings

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Overrides that make training take a few seconds.
TINY_OVERRIDES: dict[str, Any] = {
    "training": {"max_steps": 30, "batch_size": 32, "choose_strength": False},
    "trend": {"epochs": 1},
    "diffusion": {"hidden_size": 32, "num_layers": 1, "timesteps": 50},
    "sampling": {"steps": 10},
}
#: Overrides of a job that runs until it is cancelled.
ENDLESS_OVERRIDES: dict[str, Any] = {
    **TINY_OVERRIDES,
    "training": {"max_steps": 1_000_000, "batch_size": 8, "eval_every": 1_000_000},
}
PLANT_ROWS = 600


@functools.cache
def plant_csv() -> bytes:
    from model_core.simulator import simulate_plant

    return simulate_plant(rows=PLANT_ROWS).to_csv(index=False).encode()


@functools.cache
def tiny_bundle() -> Path:
    """A trained tiny bundle in a temporary directory that lives as long as the test process."""
    import io

    import pandas as pd
    import torch

    from model_core.bundle import save_bundle
    from model_core.config import TSSynthConfig
    from model_core.train import train

    torch.set_num_threads(1)  # two threads on two busy shared cores are many times slower than one
    root = Path(tempfile.mkdtemp(prefix="tssynth-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    bundle = train(pd.read_csv(io.BytesIO(plant_csv())), TSSynthConfig().with_overrides(TINY_OVERRIDES))
    return save_bundle(bundle, root / "tiny")


def model_dir_with(tmp_path: Path, *names: str) -> Path:
    """A model directory holding ``MODEL_DIR/<name>/v1`` copies of the tiny bundle."""
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    for name in names:
        shutil.copytree(tiny_bundle(), models / name / "v1")
    return models


def settings_with_tiny_model_and_dataset(tmp_path: Path) -> Settings:
    """Settings of a service holding the tiny model and one server-side dataset, ``plant.csv``."""
    model_dir_with(tmp_path, "tiny")
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "plant.csv").write_bytes(plant_csv())
    return make_settings(tmp_path)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_dir": tmp_path / "models",
        "datasets_dir": tmp_path / "datasets",
        "demo_bootstrap": False,
        "admin_token": ADMIN_TOKEN,
        "workers": 2,
    }
    values.update(overrides)
    return Settings(**values)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The one error shape, with the expected status and code; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    error: dict[str, Any] = body["error"]
    return error
