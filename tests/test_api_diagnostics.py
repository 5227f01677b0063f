"""POST /v1/models/{name}/diagnostics/ks: reference upload or dataset, generated or uploaded synthetic."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from api_support import (
    assert_error,
    plant_csv,
    settings_with_tiny_model_and_dataset,
)
from fastapi.testclient import TestClient

from app.main import create_app

URL = "/v1/models/tiny/diagnostics/ks"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_with_tiny_model_and_dataset(tmp_path))) as client:
        yield client


def _reference() -> dict:
    return {"reference": ("plant.csv", plant_csv(), "text/csv")}


def test_generated_side_json_report(client: TestClient) -> None:
    response = client.post(URL, files=_reference(), data={"n_sequences": "10", "seed": "5"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["seed"]) == ("tiny", 1, 5)
    assert body["reference"] == "upload:plant.csv" and body["synthetic"] == "generated:10x24"
    assert response.headers["x-seed"] == "5"
    report = body["report"]
    assert report["summary"]["n_reference"] == 600 and report["summary"]["n_synthetic"] == 240
    by_name = {f["name"]: f for f in report["features"]}
    assert by_name["PLANT_ID"]["kind"] == "constant" and by_name["PLANT_ID"]["mismatch_share"] == 0.0
    assert by_name["S_PUMP1"]["kind"] == "discrete" and by_name["S_PUMP1"]["tvd"] is not None
    assert 0.0 <= by_name["L_T1"]["ks_statistic"] <= 1.0
    again = client.post(URL, files=_reference(), data={"n_sequences": "10", "seed": "5"}).json()
    assert again["report"] == report


def test_random_seed_is_reported(client: TestClient) -> None:
    body = client.post(URL, files=_reference(), data={"n_sequences": "2"}).json()
    assert isinstance(body["seed"], int)


def test_server_side_dataset_and_uploaded_synthetic(client: TestClient) -> None:
    export = client.get("/v1/models/tiny/export.csv", params={"n_sequences": 4, "seed": 1}).content
    response = client.post(
        URL, data={"reference_dataset": "plant.csv"}, files={"synthetic": ("syn.csv", export, "text/csv")}
    )
    body = response.json()
    assert (body["reference"], body["synthetic"], body["seed"]) == ("dataset:plant.csv", "upload:syn.csv", None)
    assert body["report"]["summary"]["n_synthetic"] == 4 * 24
    assert "x-seed" not in response.headers


def test_csv_format(client: TestClient) -> None:
    response = client.post(URL + "?format=csv", files=_reference(), data={"n_sequences": "3", "seed": "2"})
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 14 and rows[0]["name"] == "L_T1" and rows[0]["kind"] == "continuous"
    json_report = client.post(URL, files=_reference(), data={"n_sequences": "3", "seed": "2"}).json()["report"]
    assert float(rows[0]["ks_statistic"]) == pytest.approx(json_report["features"][0]["ks_statistic"])


def test_png_plot_of_one_feature(client: TestClient) -> None:
    response = client.post(URL + "?format=png&feature=F_PUMP1", files=_reference(), data={"n_sequences": "3"})
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    error = assert_error(client.post(URL + "?format=png", files=_reference()), 422, "validation_error")
    assert "F_PUMP1" in error["details"]["features"]
    assert_error(client.post(URL + "?format=png&feature=nope", files=_reference()), 422, "validation_error")
    assert_error(client.post(URL + "?format=pdf", files=_reference()), 422, "validation_error")


def test_column_mismatch_lists_missing_and_extra(client: TestClient) -> None:
    frame = pd.read_csv(io.BytesIO(plant_csv())).drop(columns=["L_T2", "S_V1"]).assign(EXTRA=1.0)
    response = client.post(URL, files={"reference": ("r.csv", frame.to_csv(index=False).encode())})
    error = assert_error(response, 422, "column_mismatch")
    assert error["details"] == {"table": "reference", "missing": ["L_T2", "S_V1"], "extra": ["EXTRA"]}


def test_non_numeric_cell_names_row_and_column(client: TestClient) -> None:
    frame = pd.read_csv(io.BytesIO(plant_csv()))
    frame["P_J1"] = frame["P_J1"].astype(object)
    frame.loc[41, "P_J1"] = "n/a-ish"
    response = client.post(URL, files={"reference": ("r.csv", frame.to_csv(index=False).encode())})
    error = assert_error(response, 422, "invalid_data")
    assert "'P_J1'" in error["message"] and "row 42" in error["message"]
    assert error["details"] == {"table": "reference", "column": "P_J1", "row": 42}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"", "empty"), (b"L_T1,L_T1\n1,2\n", "duplicate column names"), (b"a,b\n", "no rows")],
)
def test_unreadable_reference(client: TestClient, content: bytes, fragment: str) -> None:
    error = assert_error(client.post(URL, files={"reference": ("r.csv", content)}), 422, "invalid_data")
    assert error["message"].startswith("reference CSV:") and fragment in error["message"]


def test_reference_must_be_given_once(client: TestClient) -> None:
    assert_error(client.post(URL, data={"n_sequences": "2"}), 422, "validation_error")
    both = client.post(URL, files=_reference(), data={"reference_dataset": "plant.csv"})
    assert "not both" in assert_error(both, 422, "validation_error")["message"]


@pytest.mark.parametrize("name", ["missing.csv", "../models/jobs.sqlite", ".hidden"])
def test_unknown_or_escaping_dataset_is_404(client: TestClient, name: str) -> None:
    error = assert_error(client.post(URL, data={"reference_dataset": name}), 404, "dataset_not_found")
    assert error["details"] == {"available": ["plant.csv"]}


def test_generated_side_respects_limits_and_unknown_model(client: TestClient) -> None:
    error = assert_error(client.post(URL, files=_reference(), data={"n_sequences": "5000"}), 422, "limit_exceeded")
    assert error["details"]["limit"] == "max_sequences"
    assert_error(client.post("/v1/models/nope/diagnostics/ks", files=_reference()), 404, "model_not_found")
