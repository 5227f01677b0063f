"""`tssynth demo-data` and `tssynth diagnose`: real files in, real files and exit codes out."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from model_core.cli import main
from model_core.simulator import simulate_plant


@pytest.fixture
def demo_pair(tmp_path: Path) -> tuple[Path, Path]:
    reference, synthetic = tmp_path / "ref.csv", tmp_path / "syn.csv"
    assert main(["demo-data", "--rows", "600", "--seed", "0", "--out", str(reference)]) == 0
    assert main(["demo-data", "--rows", "500", "--seed", "1", "--out", str(synthetic)]) == 0
    return reference, synthetic


def test_demo_data_writes_the_simulation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data" / "demo.csv"  # a folder that does not exist yet is created
    assert main(["demo-data", "--rows", "120", "--seed", "4", "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out), simulate_plant(rows=120, seed=4))
    assert str(out) in capsys.readouterr().out


def test_diagnose_prints_a_table_and_writes_reports(
    demo_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, synthetic = demo_pair
    json_out, csv_out, plots = tmp_path / "reports" / "r.json", tmp_path / "r.csv", tmp_path / "plots"
    capsys.readouterr()
    code = main(
        [
            "diagnose", "--reference", str(reference), "--synthetic", str(synthetic),
            "--json", str(json_out), "--csv", str(csv_out), "--plots", str(plots),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:2] == ["feature", "kind"]
    assert any(line.split()[:3] == ["S_PUMP1", "discrete", "TVD"] for line in printed.splitlines())
    assert "rows: reference 600, synthetic 500" in printed
    assert "worst: " in printed
    report = json.loads(json_out.read_text())
    assert len(report["features"]) == 14
    assert report["summary"]["n_reference"] == 600
    assert len(pd.read_csv(csv_out)) == 14
    assert len(list(plots.glob("*.png"))) == 14


def test_timestamp_column_option_excludes_a_numeric_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pd.DataFrame({"t": range(30), "x": [float(i % 7) + 0.5 for i in range(30)]})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    capsys.readouterr()
    assert (
        main(["diagnose", "--reference", str(path), "--synthetic", str(path), "--timestamp-column", "t"]) == 0
    )
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if line.strip()]
    assert "x" in rows and "t" not in rows


def test_missing_file_is_a_one_line_error(
    demo_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, _ = demo_pair
    capsys.readouterr()
    missing = tmp_path / "nope.csv"
    assert main(["diagnose", "--reference", str(reference), "--synthetic", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.csv" in err and "synthetic" in err
    assert len(err.strip().splitlines()) == 1


def test_mismatched_columns_is_a_one_line_error(
    demo_pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, synthetic = demo_pair
    renamed = tmp_path / "renamed.csv"
    pd.read_csv(synthetic).rename(columns={"L_T1": "LEVEL_1"}).to_csv(renamed, index=False)
    capsys.readouterr()
    assert main(["diagnose", "--reference", str(reference), "--synthetic", str(renamed)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "L_T1" in err and "LEVEL_1" in err
    assert len(err.strip().splitlines()) == 1


def test_unreadable_csv_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["diagnose", "--reference", str(empty), "--synthetic", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "reference" in err


def test_a_subcommand_is_required() -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
