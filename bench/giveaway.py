"""Which features give a model's synthetic windows away: the discriminative score on groups of features.

The discriminative score says how well a classifier tells synthetic windows from real ones, not by what.
This script runs the same classifier (``model_core/discriminator.py``) on each group of features, on every
pair of groups and on all groups but one. Features are grouped by the letters their name starts with
(BATADAL: ``L_`` tank levels, ``F_`` flows, ``S_`` states, ``P_`` pressures; a dataset whose names share
no prefix gets one group per feature). A group that is near the real-vs-real floor alone and far above it
beside another points at the relation between the two, which is where a model change should aim
(docs/DECISIONS.md, "where BATADAL's discriminative score comes from").

    .venv/bin/python bench/giveaway.py --dataset batadal --model models/batadal

One classifier run per subset (its spread between runs is about ±0.05 on BATADAL: compare large
differences only). Prints a table and writes ``bench/results/giveaway_<dataset>.json``.

With ``--steps`` the classifier reads each window's steps ``x[t+1] - x[t]`` instead of its values (and
the results go to ``giveaway_<dataset>_steps.json``). A family that passes on its values but not on its
steps moves differently from one step to the next: BATADAL's synthetic tanks wobbled where the real ones
ramp, which the values hid, until ramps were mapped linearly (docs/DECISIONS.md, "Default: ramps are
mapped linearly").

With ``--rows`` it looks inside single time steps instead (``bench.metrics.row_relations``): how well each
continuous feature follows from the others of its row, on real rows of unseen periods and on synthetic
rows, and how well a classifier tells single rows apart; beside each, the same for real rows of other
periods (the floor). Results go to ``giveaway_<dataset>_rows.json``. A feature whose synthetic error is
many times the real one breaks a relation the plant keeps at every instant: BATADAL's pump flows and
junction pressures (docs/DECISIONS.md, "Benchmark: a row view of what gives synthetic data away").
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.baselines import STRETCH_WINDOWS  # noqa: E402
from bench.datasets import load_dataset, real_series  # noqa: E402
from bench.metrics import frame_to_windows, row_relations  # noqa: E402
from model_core.bundle import load_bundle  # noqa: E402
from model_core.discriminator import discrimination_gap, scale_with_real_range, single_thread  # noqa: E402
from model_core.generate import generate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def feature_groups(names: list[str], kinds: dict[str, str]) -> dict[str, list[int]]:
    """Column indices of the non-constant features, grouped by the letters each name starts with."""
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        if kinds[name] == "constant":
            continue
        prefix = re.match(r"[A-Za-z]*", name)
        groups.setdefault(prefix.group(0) if prefix and prefix.group(0) else name, []).append(index)
    return groups


def subsets(groups: dict[str, list[int]]) -> dict[str, list[int]]:
    """Every group, every pair of groups and all groups but one (with more than two groups), by label."""
    everything = sorted(i for columns in groups.values() for i in columns)
    chosen = {"all": everything}
    chosen.update({name: columns for name, columns in groups.items()})
    for (first, a), (second, b) in itertools.combinations(groups.items(), 2):
        chosen[f"{first} + {second}"] = a + b
    if len(groups) > 2:
        for name, columns in groups.items():
            chosen[f"all but {name}"] = [i for i in everything if i not in columns]
    return chosen


def window_view(windows: np.ndarray, steps: bool) -> np.ndarray:
    """What the classifier reads of windows [n, L, D]: the values, or the L - 1 steps between them."""
    return np.diff(windows, axis=1) if steps else windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="demo, batadal or etth1")
    parser.add_argument("--model", required=True, help="a model directory trained on that dataset")
    parser.add_argument("--windows", type=int, default=2048, help="real and synthetic windows per side")
    parser.add_argument("--iterations", type=int, default=2000, help="classifier iterations per subset")
    parser.add_argument("--steps", action="store_true", help="classify the steps x[t+1] - x[t], not values")
    parser.add_argument("--rows", action="store_true", help="the relations within single time steps instead")
    args = parser.parse_args(argv)
    if args.steps and args.rows:
        parser.error("--steps and --rows are two different views: choose one")

    torch.set_num_threads(1)
    bundle = load_bundle(args.model)
    series = real_series(load_dataset(args.dataset), bundle.schema)
    seq_len = bundle.config.window.seq_len
    real, _ = series.windows(seq_len)
    n = min(len(real), args.windows)
    real = real[np.random.default_rng(0).permutation(len(real))[:n]]
    synthetic = frame_to_windows(generate(bundle, n, seq_len=seq_len, seed=1), series.names)

    if args.rows:
        return _rows(args, series.values, synthetic, series.names, bundle.schema.kinds, seq_len)
    groups = feature_groups(series.names, bundle.schema.kinds)
    gaps: dict[str, float] = {}
    started = time.monotonic()
    view = "steps" if args.steps else "values"
    print(f"| features ({args.dataset}, {view}, {n} windows per side) | columns | gap |\n| --- | --- | --- |")
    for label, columns in subsets(groups).items():
        with single_thread():
            scaled_real, scaled_synthetic = scale_with_real_range(real[..., columns], synthetic[..., columns])
            seen = window_view(scaled_real, args.steps), window_view(scaled_synthetic, args.steps)
            gaps[label] = round(discrimination_gap(*seen, args.iterations, 128, 0), 3)
        print(f"| {label} | {len(columns)} | {gaps[label]:.3f} |", flush=True)
    result = {
        "dataset": args.dataset,
        "model": str(args.model),
        "windows": n,
        "view": view,
        "iterations": args.iterations,
        "groups": {name: [series.names[i] for i in columns] for name, columns in groups.items()},
        "gaps": gaps,
        "seconds": round(time.monotonic() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = "_steps" if args.steps else ""
    (RESULTS / f"giveaway_{args.dataset}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def split_rows_by_stretch(
    values: np.ndarray, seq_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of a random half of the series' stretches (``STRETCH_WINDOWS`` windows long, as the
    fresh-data floor cuts them), of a quarter and of the last quarter: the relations are learnt from the
    first, judged on the second, and the third stands in for fresh data (the floor)."""
    stretch = np.arange(len(values)) // (STRETCH_WINDOWS * seq_len)
    order = rng.permutation(int(stretch.max()) + 1)
    half, three_quarters = len(order) // 2, (3 * len(order)) // 4
    parts = order[:half], order[half:three_quarters], order[three_quarters:]
    fit, test, fresh = (values[np.isin(stretch, part)] for part in parts)
    return fit, test, fresh


def _rows(
    args: argparse.Namespace, values: np.ndarray, synthetic: np.ndarray, names: list[str], kinds: dict[str, str], seq_len: int
) -> int:
    """The row view: the model's rows and, judged the same way, real rows of other stretches (the floor).
    Both sides are learnt from the same real rows, so a series that drifts raises both alike."""
    started = time.monotonic()
    rng = np.random.default_rng(0)
    fit, test, fresh = split_rows_by_stretch(values, seq_len, rng)
    judged = {"model": synthetic.reshape(-1, synthetic.shape[-1]), "fresh_data_floor": fresh}
    result = row_relations(fit, test, judged, names, kinds, rng)
    model, floor = result["model"], result["fresh_data_floor"]
    print(f"single rows told apart: model {model['row_gap']:.3f}, fresh-data floor {floor['row_gap']:.3f} (|accuracy - 0.5|)\n")
    print(
        f"| feature ({args.dataset}) | real error / std | synthetic error / std | ratio | floor ratio |\n"
        "| --- | --- | --- | --- | --- |"
    )
    for name, errors in sorted(model["features"].items(), key=lambda item: -item[1]["ratio"]):
        print(
            f"| {name} | {result['real_error'][name]:.3f} | {errors['error']:.3f} | {errors['ratio']:.2f} "
            f"| {floor['features'][name]['ratio']:.2f} |"
        )
    output = {"dataset": args.dataset, "model_dir": str(args.model), "windows": len(synthetic), "view": "rows"}
    output.update(result, seconds=round(time.monotonic() - started, 1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"giveaway_{args.dataset}_rows.json").write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
