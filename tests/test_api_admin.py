"""Admin endpoints: auth, validation before a job exists, real training processes, queue and cancel."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from api_support import (
    ADMIN,
    ENDLESS_OVERRIDES,
    TINY_OVERRIDES,
    assert_error,
    make_settings,
    plant_csv,
    settings_with_tiny_model_and_dataset,
)
from fastapi.testclient import TestClient

from app.main import create_app

ADMIN_ROUTES = [
    ("POST", "/v1/admin/train"),
    ("GET", "/v1/admin/jobs"),
    ("GET", "/v1/admin/jobs/abc"),
    ("POST", "/v1/admin/jobs/abc/cancel"),
]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_with_tiny_model_and_dataset(tmp_path))) as client:
        yield client


def _train(client: TestClient, model: str, overrides: dict[str, Any], **source: Any) -> Any:
    files = {"file": ("plant.csv", source.pop("content", plant_csv()), "text/csv")} if "dataset" not in source else None
    data = {"model": model, "overrides": json.dumps(overrides), **source}
    return client.post("/v1/admin/train", headers=ADMIN, data=data, files=files)


def _wait(client: TestClient, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/admin/jobs/{job_id}", headers=ADMIN).json()
        if done(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not get there in {timeout}s: {job}")


def _finished(job: dict[str, Any]) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_needs_the_admin_token(client: TestClient, method: str, path: str) -> None:
    assert_error(client.request(method, path), 401, "unauthorized")
    assert_error(client.request(method, path, headers={"Authorization": "Bearer nope"}), 403, "forbidden")


def test_admin_is_disabled_without_a_configured_token(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, admin_token=None))) as client:
        for method, path in ADMIN_ROUTES:
            error = assert_error(client.request(method, path, headers=ADMIN), 503, "admin_disabled")
            assert "TSSYNTH_ADMIN_TOKEN" in error["message"]


def _bad_cell_csv() -> bytes:
    frame = pd.read_csv(io.BytesIO(plant_csv()))
    frame["F_DEMAND"] = frame["F_DEMAND"].astype(object)
    frame.loc[99, "F_DEMAND"] = "offline"
    return frame.to_csv(index=False).encode()


def _states_only_csv() -> bytes:
    frame = pd.read_csv(io.BytesIO(plant_csv()))
    return frame[["timestamp", *[c for c in frame.columns if c.startswith("S_")]]].to_csv(index=False).encode()


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "fragment"),
    [
        ({"overrides": "{"}, 422, "invalid_config", "not valid JSON"),
        ({"overrides": "[1]"}, 422, "invalid_config", "JSON object"),
        ({"overrides": '{"training": {"max_stepz": 5}}'}, 422, "invalid_config", "training.max_stepz: unknown key"),
        ({"overrides": '{"sampling": {"steps": 500}}'}, 422, "invalid_config", "exceeds diffusion.timesteps"),
        ({"model": "../escape"}, 422, "validation_error", "invalid model name"),
        ({"content": _bad_cell_csv()}, 422, "invalid_data", "column 'F_DEMAND' at row 100"),
        ({"content": plant_csv()[:2000]}, 422, "invalid_data", "not enough rows"),
        ({"content": b""}, 422, "invalid_data", "empty"),
        ({"content": _states_only_csv()}, 422, "invalid_data", "nothing to model: no continuous column"),
        ({"dataset": "nope.csv"}, 404, "dataset_not_found", "nope.csv"),
    ],
)
def test_training_requests_are_validated_before_a_job_exists(
    client: TestClient, kwargs: dict[str, Any], status: int, code: str, fragment: str
) -> None:
    overrides = kwargs.pop("overrides", "{}")
    model = kwargs.pop("model", "m")
    files = None if "dataset" in kwargs else {"file": ("d.csv", kwargs.pop("content", plant_csv()))}
    response = client.post(
        "/v1/admin/train", headers=ADMIN, data={"model": model, "overrides": overrides, **kwargs}, files=files
    )
    assert fragment in assert_error(response, status, code)["message"]
    assert client.get("/v1/admin/jobs", headers=ADMIN).json() == {"jobs": []}


def test_training_needs_data_and_a_model_name(client: TestClient) -> None:
    assert_error(client.post("/v1/admin/train", headers=ADMIN, data={"model": "m"}), 422, "validation_error")
    assert_error(
        client.post("/v1/admin/train", headers=ADMIN, files={"file": ("d.csv", plant_csv())}), 422, "validation_error"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_training_on_a_missing_cuda_device_is_refused(client: TestClient) -> None:
    response = _train(client, "m", {**TINY_OVERRIDES, "training": {"device": "cuda"}})
    assert "CUDA is not available" in assert_error(response, 422, "invalid_config")["message"]


def test_a_job_trains_and_hot_swaps_a_new_version(client: TestClient, tmp_path: Path) -> None:
    registry = client.app.state.services.registry  # type: ignore[attr-defined]
    in_flight = registry.get("tiny")  # what a request that started before the swap holds
    response = _train(client, "tiny", TINY_OVERRIDES)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == job["url"] == f"/v1/admin/jobs/{job['id']}"
    assert job["model"] == "tiny" and job["source"] == "upload:plant.csv" and job["overrides"] == TINY_OVERRIDES
    assert job["state"] in ("queued", "running")

    done = _wait(client, job["id"], _finished)
    assert done["state"] == "succeeded", done
    assert (done["version"], done["stage"], done["step"], done["total"]) == (2, "validate", 1, 1)
    assert done["loss"] is not None and done["error"] is None and done["finished_at"] is not None
    detail = client.get("/v1/models/tiny").json()
    assert (detail["version"], detail["versions"]) == (2, [1, 2])
    assert (tmp_path / "models" / "tiny" / "v2" / "manifest.json").is_file()
    assert in_flight.version == 1 and in_flight.bundle is not registry.get("tiny").bundle
    assert client.post("/v1/models/tiny/generate", json={"n_sequences": 1}).json()["version"] == 2
    assert [j["id"] for j in client.get("/v1/admin/jobs", headers=ADMIN).json()["jobs"]] == [job["id"]]
    assert client.get("/v1/admin/jobs?state=queued", headers=ADMIN).json() == {"jobs": []}
    assert 'tssynth_jobs{state="succeeded"} 1.0' in client.get("/metrics").text
    assert not any((tmp_path / "models" / ".uploads").iterdir())  # the upload is gone with its job
    assert not any((tmp_path / "models" / ".staging").iterdir())


def test_cancel_running_and_queued_jobs_and_a_job_that_fails(client: TestClient, tmp_path: Path) -> None:
    running = _train(client, "slow", ENDLESS_OVERRIDES).json()
    doomed = _train(client, "doomed", TINY_OVERRIDES, dataset="plant.csv").json()
    waiting = _train(client, "slow", ENDLESS_OVERRIDES).json()
    assert doomed["state"] == waiting["state"] == "queued"  # one training job at a time

    cancelled = client.post(f"/v1/admin/jobs/{waiting['id']}/cancel", headers=ADMIN).json()
    assert cancelled["state"] == "cancelled" and cancelled["error"] == "cancelled before it started"

    progress = _wait(client, running["id"], lambda j: j["stage"] == "diffusion" and j["step"] > 1)
    assert progress["state"] == "running" and progress["total"] == 1_000_000 and progress["eta_seconds"] > 0
    started = time.perf_counter()
    assert client.get("/healthz").status_code == 200
    assert time.perf_counter() - started < 0.5  # training runs in another process

    (tmp_path / "datasets" / "plant.csv").unlink()  # the queued job's data disappears before it runs
    asked = client.post(f"/v1/admin/jobs/{running['id']}/cancel", headers=ADMIN).json()
    assert asked["cancel_requested"] is True
    assert _wait(client, running["id"], _finished)["state"] == "cancelled"
    assert "slow" not in client.get("/v1/models").json()["models"]

    failed = _wait(client, doomed["id"], _finished)
    assert failed["state"] == "failed" and "file not found" in failed["error"]
    assert_error(client.post(f"/v1/admin/jobs/{running['id']}/cancel", headers=ADMIN), 409, "job_finished")
    assert_error(client.get("/v1/admin/jobs/unknown", headers=ADMIN), 404, "job_not_found")
    assert_error(client.post("/v1/admin/jobs/unknown/cancel", headers=ADMIN), 404, "job_not_found")
    assert_error(client.get("/v1/admin/jobs?state=lost", headers=ADMIN), 422, "validation_error")
