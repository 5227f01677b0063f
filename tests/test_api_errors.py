"""Every failure answers with the one error shape, and none leaks a traceback or changes a model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import ADMIN, assert_error, make_settings, model_dir_with, plant_csv
from fastapi.testclient import TestClient

from app import generation
from app.main import create_app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    model_dir_with(tmp_path, "tiny")
    settings = make_settings(tmp_path, max_upload_bytes=len(plant_csv()) + 10_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    assert "no route GET /v2/models" in assert_error(client.get("/v2/models"), 404, "not_found")["message"]
    error = assert_error(client.put("/v1/models"), 405, "method_not_allowed")
    assert error["message"] == "method PUT is not allowed on /v1/models"


def test_request_validation_lists_every_problem(client: TestClient) -> None:
    response = client.post("/v1/models/tiny/generate", json={"n_sequences": -1, "layout": "wide"})
    error = assert_error(response, 422, "validation_error")
    assert {p["location"] for p in error["details"]} == {"body.n_sequences", "body.layout"}
    assert_error(client.post("/v1/models/tiny/generate", content=b"{not json", headers={"content-type": "application/json"}),
                 422, "validation_error")


def test_unexpected_errors_are_500_without_details(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object) -> None:
        raise RuntimeError("secret internals at /srv/models")

    monkeypatch.setattr(generation, "generate_frame", explode)
    response = client.post("/v1/models/tiny/generate", json={"n_sequences": 1})
    error = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert error["details"] is None
    assert client.get("/healthz").status_code == 200  # and the server carries on


def test_declared_body_over_the_limit_is_413(client: TestClient) -> None:
    big = plant_csv() * 2
    response = client.post(
        "/v1/models/tiny/diagnostics/ks", files={"reference": ("ref.csv", big)}, data={"n_sequences": "1"}
    )
    error = assert_error(response, 413, "payload_too_large")
    assert "max_upload_bytes" in error["message"]


def test_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: the bytes are counted as they arrive
        for _ in range(40):
            yield b"x" * 10_000

    response = client.post(
        "/v1/admin/train",
        content=body(),
        headers={**ADMIN, "content-type": "multipart/form-data; boundary=zzz"},
    )
    assert "max_upload_bytes" in assert_error(response, 413, "payload_too_large")["message"]


def test_bad_input_never_changes_the_served_model(client: TestClient, tmp_path: Path) -> None:
    before = client.get("/v1/models/tiny").json()
    client.post("/v1/admin/train", headers=ADMIN, data={"model": "tiny", "overrides": "{"},
                files={"file": ("x.csv", b"a,b\n1,2\n")})
    client.post("/v1/models/tiny/diagnostics/ks", files={"reference": ("r.csv", b"garbage")})
    assert client.get("/v1/models/tiny").json() == before
    assert sorted(p.name for p in (tmp_path / "models" / "tiny").iterdir()) == ["v1"]
    assert client.get("/v1/admin/jobs", headers=ADMIN).json() == {"jobs": []}
