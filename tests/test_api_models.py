"""Health, metrics, model metadata, generation and the CSV export, through the HTTP API."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from api_support import assert_error, make_settings, model_dir_with
from fastapi.testclient import TestClient

from app import generation
from app.main import create_app

FEATURES = ["L_T1", "L_T2", "L_T3", "S_PUMP1", "F_PUMP1", "S_PUMP2", "F_PUMP2", "S_PUMP3", "F_PUMP3", "S_V1",
            "P_J1", "P_J2", "F_DEMAND", "PLANT_ID"]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    model_dir_with(tmp_path, "tiny")
    with TestClient(create_app(make_settings(tmp_path, max_export_rows=5000))) as client:
        yield client


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "models": ["tiny"]}


def test_not_ready_without_a_model(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert client.get("/healthz").status_code == 200
        assert_error(client.get("/readyz"), 503, "not_ready")
        assert client.get("/v1/models").json() == {"models": []}


def test_model_list_and_detail(client: TestClient) -> None:
    (summary,) = client.get("/v1/models").json()["models"]
    assert summary["name"] == "tiny" and summary["version"] == 1 and summary["versions"] == [1]
    assert summary["features"] == FEATURES and summary["seq_len"] == 24 and summary["rows"] == 600
    detail = client.get("/v1/models/tiny").json()
    kinds = {f["name"]: f["kind"] for f in detail["schema"]["features"]}
    assert kinds["S_PUMP1"] == "discrete" and kinds["PLANT_ID"] == "constant" and kinds["L_T1"] == "continuous"
    assert detail["schema"]["timestamp_column"] == "timestamp"
    # The couplings the model enforces are visible, so a user can see which laws of the plant hold exactly.
    assert {(c["continuous"], c["discrete"]) for c in detail["schema"]["couplings"]} == {
        (f"F_PUMP{k}", f"S_PUMP{k}") for k in (1, 2, 3)
    }
    ranges = {(c["continuous"], c["discrete"]): c for c in detail["schema"]["range_couplings"]}
    assert set(ranges) == {("P_J1", "S_PUMP1"), ("P_J2", "S_PUMP2")}
    assert all(c["states"] == [0.0, 1.0] and c["highs"][0] < c["lows"][1] for c in ranges.values())
    assert detail["config"]["diffusion"]["timesteps"] == 50
    assert detail["training"]["steps"] == 30
    assert {f["name"] for f in detail["validation"]["features"]} == set(FEATURES)
    assert detail["validation_rows"] == 60  # val_fraction 0.1 of 600 rows
    assert detail["schema"]["calendar_periods"] == [86400.0, 604800.0]  # hourly rows over 25 days
    assert len(detail["data_sha256"]) == 64


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/nope"),
        ("POST", "/v1/models/nope/generate"),
        ("GET", "/v1/models/nope/export.csv"),
    ],
)
def test_unknown_model_is_404(client: TestClient, method: str, path: str) -> None:
    error = assert_error(client.request(method, path, json={}), 404, "model_not_found")
    assert error["details"] == {"available": ["tiny"]}


def test_generate_nested_in_original_units_and_formats(client: TestClient) -> None:
    body = client.post("/v1/models/tiny/generate", json={"n_sequences": 3, "seq_len": 5, "seed": 11}).json()
    assert (body["seed"], body["n_sequences"], body["seq_len"], body["layout"]) == (11, 3, 5, "nested")
    assert (body["sampler"], body["steps"]) == ("ddim", 10)  # the model's configured defaults
    assert body["features"] == FEATURES
    # One list per sequence, hour by hour; the records layout of the same request carries the same stamps.
    stamps = pd.to_datetime(pd.Series([t for sequence in body["timestamps"] for t in sequence])).to_numpy().reshape(3, 5)
    assert (np.diff(stamps, axis=1) == np.timedelta64(1, "h")).all()
    records = client.post(
        "/v1/models/tiny/generate", json={"n_sequences": 3, "seq_len": 5, "seed": 11, "layout": "records"}
    ).json()["data"]
    assert [r["timestamp"] for r in records] == [t for sequence in body["timestamps"] for t in sequence]
    data = body["data"]
    assert len(data) == 3 and all(len(seq) == 5 and all(len(row) == len(FEATURES) for row in seq) for seq in data)
    rows = [row for seq in data for row in seq]
    schema = {f["name"]: f for f in client.get("/v1/models/tiny").json()["schema"]["features"]}
    for index, name in enumerate(FEATURES):
        values = [row[index] for row in rows]
        if schema[name]["kind"] == "continuous":
            assert all(schema[name]["min"] - 1e-9 <= v <= schema[name]["max"] + 1e-9 for v in values), name
        else:
            assert all(isinstance(v, int) and v in schema[name]["levels"] for v in values), name
    assert {row[FEATURES.index("PLANT_ID")] for row in rows} == {7}


def test_generate_is_reproducible_and_reports_a_random_seed(client: TestClient) -> None:
    first = client.post("/v1/models/tiny/generate", json={"n_sequences": 2}).json()
    again = client.post("/v1/models/tiny/generate", json={"n_sequences": 2, "seed": first["seed"]}).json()
    assert again["data"] == first["data"]
    other = client.post("/v1/models/tiny/generate", json={"n_sequences": 2, "seed": first["seed"] + 1}).json()
    assert other["data"] != first["data"]


def test_generate_records_layout(client: TestClient) -> None:
    body = client.post(
        "/v1/models/tiny/generate", json={"n_sequences": 2, "seq_len": 3, "seed": 1, "layout": "records"}
    ).json()
    records = body["data"]
    assert [(r["sequence_id"], r["step"]) for r in records] == [(s, t) for s in range(2) for t in range(3)]
    assert list(records[0]) == ["sequence_id", "step", "timestamp", *FEATURES]
    nested = client.post("/v1/models/tiny/generate", json={"n_sequences": 2, "seq_len": 3, "seed": 1}).json()
    assert [[r[f] for f in FEATURES] for r in records] == [row for seq in nested["data"] for row in seq]


def test_generate_with_ddpm(client: TestClient) -> None:
    body = client.post("/v1/models/tiny/generate", json={"n_sequences": 1, "sampler": "ddpm", "seed": 2}).json()
    assert (body["sampler"], body["steps"], len(body["data"][0])) == ("ddpm", None, 24)


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        ({"n_sequences": 1001}, "limit_exceeded", "max_sequences is 1000"),
        ({"n_sequences": 300, "seq_len": 24}, "limit_exceeded", "max_export_rows is 5000"),
        ({"n_sequences": 1, "steps": 51}, "validation_error", "exceeds the model's diffusion.timesteps (50)"),
        ({"n_sequences": 1, "sampler": "ddpm", "steps": 5}, "validation_error", "ddim sampler only"),
        ({"n_sequences": 0}, "validation_error", "n_sequences"),
        ({"n_sequences": 1, "layout": "wide"}, "validation_error", "layout"),
        ({"n_sequences": 1, "sampler": "euler"}, "validation_error", "sampler"),
        ({"n_sequences": 1, "temperature": 2}, "validation_error", "temperature"),
    ],
)
def test_generate_rejects_bad_requests(client: TestClient, payload: dict, code: str, fragment: str) -> None:
    error = assert_error(client.post("/v1/models/tiny/generate", json=payload), 422, code)
    assert fragment in error["message"]


def test_limit_errors_name_the_setting(client: TestClient) -> None:
    error = assert_error(client.post("/v1/models/tiny/generate", json={"n_sequences": 1001}), 422, "limit_exceeded")
    assert error["details"] == {"limit": "max_sequences", "maximum": 1000, "requested": 1001}


def test_export_streams_the_long_format_in_chunks(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generation, "EXPORT_CHUNK_ROWS", 2 * 24)  # two sequences per chunk: three chunks
    response = client.get("/v1/models/tiny/export.csv", params={"n_sequences": 5, "seed": 4})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-seed"] == "4"
    assert response.headers["content-disposition"] == 'attachment; filename="tiny-v1-seed4.csv"'
    assert response.text.count("sequence_id") == 1  # one header, whatever the number of chunks
    frame = pd.read_csv(io.StringIO(response.text))
    assert list(frame.columns) == ["sequence_id", "step", "timestamp", *FEATURES]
    assert len(frame) == 5 * 24 and sorted(frame["sequence_id"].unique()) == [0, 1, 2, 3, 4]
    assert frame["step"].tolist() == list(range(24)) * 5
    json_body = client.post("/v1/models/tiny/generate", json={"n_sequences": 5, "seed": 4, "layout": "records"}).json()
    assert frame[FEATURES].to_dict(orient="records") == [{f: r[f] for f in FEATURES} for r in json_body["data"]]


def test_export_random_seed_is_in_the_header(client: TestClient) -> None:
    response = client.get("/v1/models/tiny/export.csv", params={"n_sequences": 1, "seq_len": 3})
    seed = int(response.headers["x-seed"])
    again = client.get("/v1/models/tiny/export.csv", params={"n_sequences": 1, "seq_len": 3, "seed": seed})
    assert again.text == response.text


def test_export_limits_and_validation(client: TestClient) -> None:
    error = assert_error(
        client.get("/v1/models/tiny/export.csv", params={"n_sequences": 1000, "seq_len": 24}), 422, "limit_exceeded"
    )
    assert error["details"]["limit"] == "max_export_rows"
    assert_error(client.get("/v1/models/tiny/export.csv", params={"n_sequences": "lots"}), 422, "validation_error")
    assert_error(client.get("/v1/models/tiny/export.csv", params={"steps": 999}), 422, "validation_error")


def test_metrics_count_requests_rows_and_jobs(client: TestClient) -> None:
    client.post("/v1/models/tiny/generate", json={"n_sequences": 2, "seq_len": 4})
    client.get("/v1/models/tiny/export.csv", params={"n_sequences": 1, "seq_len": 3})
    client.get("/v1/models/does-not-exist")
    text = client.get("/metrics").text
    assert 'tssynth_http_requests_total{method="POST",route="/v1/models/{name}/generate",status="200"} 1.0' in text
    assert 'tssynth_http_requests_total{method="GET",route="/v1/models/{name}",status="404"} 1.0' in text
    assert 'tssynth_http_request_duration_seconds_count{method="GET",route="/v1/models/{name}/export.csv"} 1.0' in text
    assert 'tssynth_generated_rows_total{model="tiny"} 11.0' in text
    assert 'tssynth_jobs{state="queued"} 0.0' in text and 'tssynth_jobs{state="succeeded"} 0.0' in text


def test_api_token_protects_data_endpoints_only(tmp_path: Path) -> None:
    model_dir_with(tmp_path, "tiny")
    with TestClient(create_app(make_settings(tmp_path, api_token="data-token"))) as client:
        assert_error(client.get("/v1/models"), 401, "unauthorized")
        assert_error(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 403, "forbidden")
        assert_error(client.get("/v1/models", headers={"Authorization": "Basic abc"}), 401, "unauthorized")
        assert client.get("/v1/models", headers={"Authorization": "Bearer data-token"}).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200


def test_healthz_answers_while_generation_saturates_the_pool(tmp_path: Path) -> None:
    model_dir_with(tmp_path, "tiny")
    with TestClient(create_app(make_settings(tmp_path, workers=1))) as client:
        limiter = client.app.state.services.pool.limiter  # type: ignore[attr-defined]
        heavy = {"n_sequences": 60, "seq_len": 120, "seed": 0}
        worker = threading.Thread(target=client.post, args=("/v1/models/tiny/generate",), kwargs={"json": heavy})
        worker.start()
        deadline = time.monotonic() + 10
        while limiter.borrowed_tokens == 0:  # until the only worker slot is taken
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        assert time.perf_counter() - started < 0.5
        assert worker.is_alive(), "healthz should have answered while the generation was still running"
        worker.join()


def test_openapi_documents_every_endpoint_with_the_error_shape(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/healthz", "/readyz", "/metrics", "/v1/models", "/v1/models/{name}", "/v1/models/{name}/generate",
        "/v1/models/{name}/export.csv", "/v1/models/{name}/diagnostics/ks", "/v1/admin/train", "/v1/admin/jobs",
        "/v1/admin/jobs/{job_id}", "/v1/admin/jobs/{job_id}/cancel",
    }
    generate = spec["paths"]["/v1/models/{name}/generate"]["post"]
    assert generate["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    assert spec["components"]["schemas"]["GenerateRequest"]["examples"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's own 422 body is never sent
    export = spec["paths"]["/v1/models/{name}/export.csv"]["get"]["responses"]
    assert export["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")


def test_no_docs_page_that_would_load_scripts_from_a_cdn(client: TestClient) -> None:
    assert_error(client.get("/docs"), 404, "not_found")
    assert_error(client.get("/redoc"), 404, "not_found")
