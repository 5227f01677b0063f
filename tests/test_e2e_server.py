"""The real server as a subprocess on a loopback port: train through the API, serve, restart, still there."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest
from api_support import ADMIN, ADMIN_TOKEN, TINY_OVERRIDES, plant_csv

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(tmp_path: Path, log_name: str) -> Iterator[httpx.Client]:
    port = _free_port()
    env = {
        **os.environ,
        "TSSYNTH_MODEL_DIR": str(tmp_path / "models"),
        "TSSYNTH_DEMO_BOOTSTRAP": "0",
        "TSSYNTH_ADMIN_TOKEN": ADMIN_TOKEN,
        "TSSYNTH_WORKERS": "1",
    }
    log = tmp_path / log_name
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"server exited:\n{log.read_text()}"
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server did not start:\n{log.read_text()}"
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)  # a graceful stop, as an orchestrator does it
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def test_train_generate_export_diagnose_restart(tmp_path: Path) -> None:
    with running_server(tmp_path, "first.log") as server:
        assert server.get("/readyz").status_code == 503
        response = server.post(
            "/v1/admin/train",
            headers=ADMIN,
            data={"model": "plant", "overrides": json.dumps(TINY_OVERRIDES)},
            files={"file": ("plant.csv", plant_csv(), "text/csv")},
        )
        assert response.status_code == 202, response.text
        location = response.headers["location"]
        deadline = time.monotonic() + 120
        while (job := server.get(location, headers=ADMIN).json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            assert server.get("/healthz").status_code == 200
            time.sleep(0.3)
        assert job["state"] == "succeeded", job
        assert server.get("/readyz").json() == {"status": "ready", "models": ["plant"]}

        generated = server.post("/v1/models/plant/generate", json={"n_sequences": 3, "seed": 9}).json()
        assert (generated["version"], len(generated["data"]), len(generated["data"][0])) == (1, 3, 24)

        export = server.get("/v1/models/plant/export.csv", params={"n_sequences": 3, "seed": 9})
        assert export.headers["x-seed"] == "9"
        frame = pd.read_csv(io.StringIO(export.text))
        assert len(frame) == 72 and frame.columns[:3].tolist() == ["sequence_id", "step", "timestamp"]
        rows = frame[generated["features"]].to_numpy().tolist()
        assert rows == [row for sequence in generated["data"] for row in sequence]

        ks = server.post(
            "/v1/models/plant/diagnostics/ks",
            files={"reference": ("plant.csv", plant_csv(), "text/csv")},
            data={"n_sequences": "10", "seed": "1"},
        ).json()
        assert ks["report"]["summary"]["n_synthetic"] == 240 and len(ks["report"]["features"]) == 14
        assert 'tssynth_generated_rows_total{model="plant"} 384.0' in server.get("/metrics").text

    with running_server(tmp_path, "second.log") as server:
        models = server.get("/v1/models").json()["models"]
        assert [(m["name"], m["version"]) for m in models] == [("plant", 1)]
        jobs = server.get("/v1/admin/jobs", headers=ADMIN).json()["jobs"]
        assert [(j["id"], j["state"], j["version"]) for j in jobs] == [(job["id"], "succeeded", 1)]
        again = server.post("/v1/models/plant/generate", json={"n_sequences": 3, "seed": 9}).json()
        assert again["data"] == generated["data"]  # the reloaded bundle is the same model
