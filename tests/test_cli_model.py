"""`tssynth train`, `sample` and `diagnose` chained on real files, as the README shows them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from model_core.cli import main, strength_choice_line
from model_core.simulator import simulate_plant

TINY = {
    "training": {"max_steps": 60, "batch_size": 32, "eval_every": 30, "choose_strength": False},
    "trend": {"epochs": 1, "hidden_size": 16},
    "diffusion": {"hidden_size": 32, "num_layers": 1, "timesteps": 50},
    "sampling": {"steps": 5},
}


def _write(tmp_path: Path, name: str, content: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return path


def test_train_sample_diagnose_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "plant.csv"
    simulate_plant(rows=500, seed=3).to_csv(data, index=False)
    model, synthetic = tmp_path / "models" / "tiny", tmp_path / "syn.csv"
    config = _write(tmp_path, "config.json", TINY)

    assert main(["train", "--data", str(data), "--config", str(config), "--out", str(model), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "(60 denoiser steps" in out and f"saved to {model}" in out and "note: the" not in out
    assert "3 exact (F_PUMP1/S_PUMP1, F_PUMP2/S_PUMP2, F_PUMP3/S_PUMP3)" in out
    assert "2 per-state ranges (P_J1/S_PUMP1, P_J2/S_PUMP2)" in out
    assert re.search(r"validation \(generated windows vs \d+ held-out rows\):", out) and "KS mean" in out

    assert main(["sample", "--model", str(model), "--n", "5", "--seq-len", "30", "--seed", "2",
                 "--out", str(synthetic), "--threads", "1"]) == 0  # fmt: skip
    assert "wrote 5 sequences (150 rows)" in capsys.readouterr().out
    frame = pd.read_csv(synthetic)
    features = list(simulate_plant(rows=10).drop(columns=["timestamp"]).columns)
    assert list(frame.columns) == ["sequence_id", "step", "timestamp", *features]
    assert frame.groupby("sequence_id").size().tolist() == [30] * 5

    report = tmp_path / "report.json"
    assert main(["diagnose", "--reference", str(data), "--synthetic", str(synthetic), "--json", str(report)]) == 0
    assert {f["name"] for f in json.loads(report.read_text())["features"]} == set(features)

    # The same --out again is refused with a one-line error instead of overwriting the model.
    assert main(["train", "--data", str(data), "--config", str(config), "--out", str(model), "--threads", "1"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_train_says_when_the_time_budget_decided(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "plant.csv"
    simulate_plant(rows=300, seed=4).to_csv(data, index=False)
    budgeted = {**TINY, "training": {**TINY["training"], "max_steps": 100_000, "max_minutes": 1e-6}}
    config = _write(tmp_path, "config.json", budgeted)
    model = tmp_path / "budgeted"
    assert main(["train", "--data", str(data), "--config", str(config), "--out", str(model), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "(30 denoiser steps" in out
    assert "note: the 1e-06-minute budget (training.max_minutes) allowed 30 of training.max_steps 100000" in out


def test_the_strength_choice_line_gives_both_scores_and_the_rule_that_kept_the_configured_strength() -> None:
    # ETTh1's tie: pure noise scored lower, but not by the margin, so the faster configured start stays.
    tie = {"candidates": [0.1, 1.0], "discrimination_gaps": [0.0195, 0.0183], "chosen": 0.1, "margin": 0.02, "seconds": 51.5}
    line = strength_choice_line(tie)
    assert line.startswith("sampling.strength 0.1 chosen (training.choose_strength)")
    assert "0.1: 0.019, 1: 0.018 (1 replaces 0.1 only when lower by more than 0.02; took 51.5 s)" in line
    # A model saved before the margin existed has none to state.
    assert "replaces" not in strength_choice_line({key: value for key, value in tie.items() if key != "margin"})
