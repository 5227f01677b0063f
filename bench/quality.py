"""Quality benchmark: how close are the synthetic windows to the real ones, next to floors and baselines?

For each dataset: train the default config (plus only the dataset's data overrides), generate as many
24-step windows as the real series has (at most 10,000) and measure marginals, dynamics, cross-feature
structure, the TimeGAN discriminative/predictive scores and the pump flow/state constraint, for the
model and, in the same run, for the real-vs-real floors and the i.i.d./VAR(1) baselines
(``bench/baselines.py``). ``--ablations`` retrains variants on BATADAL and ETTh1.

Results: ``bench/results/quality.json`` and the quality section of ``docs/benchmarks.md`` with pictures
under ``docs/img/quality/``; a ``--quick`` run writes all three under ``bench/results/quick/`` instead
(git-ignored), never over the published ones.

    .venv/bin/python bench/quality.py --quick                 # a few minutes, for development
    .venv/bin/python bench/quality.py --ablations             # the full benchmark
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` and the engine importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench import plots
from bench.baselines import (
    STRETCH_WINDOWS,
    fit_var1,
    iid_sample,
    random_halves,
    snap_to_support,
    stretch_labels,
    time_halves,
    unseen_stretches,
)
from bench.datasets import NAMES, BenchDataset, DatasetUnavailable, RealSeries, load_dataset, real_series
from bench.metrics import (
    closest_real_distance,
    correlation_error,
    flow_state_agreement,
    flow_state_pairs,
    frame_to_windows,
    lag1_acf_error,
    marginal_metrics,
    pooled_acf,
    window_statistics_ks,
)
from bench.report import (
    Progress,
    command_line,
    describe_machine,
    finish,
    fmt,
    machine,
    page_dir,
    read_json,
    table,
    update_docs_section,
    write_json,
)
from bench.scores import ScoreSettings, discriminative_score, predictive_score
from model_core.bundle import ModelBundle
from model_core.config import TSSynthConfig
from model_core.generate import iter_generate
from model_core.train import Progress as TrainProgress
from model_core.train import default_threads, train

#: Each ablation is a set of config overrides on top of the default config.
ABLATIONS: list[tuple[str, dict[str, Any]]] = [
    ("trend off", {"trend": {"enabled": False}}),
    ("stage-1 states off", {"trend": {"discrete_states": False}}),
    ("calendar off", {"trend": {"calendar": False}}),
    ("state lead off", {"trend": {"state_lead": False}}),
    ("backbone transformer", {"diffusion": {"backbone_type": "transformer"}}),
    ("normalisation standard (bounds sigmoid)", {"transform": {"normalization": "standard"}}),
    ("standard, bounds none", {"transform": {"normalization": "standard", "bounds": "none"}}),
    ("standard, bounds clip", {"transform": {"normalization": "standard", "bounds": "clip"}}),
    ("no Min-SNR weighting", {"loss": {"snr_gamma": 0.0}}),
    ("no quantile loss", {"loss": {"quantile_weight": 0.0}}),
    ("no residual-stats loss", {"loss": {"residual_stats_weight": 0.0}}),
]
#: Sampling-only ablations on the default model: (label, sampler, steps, sampling.strength). DDPM runs every
#: timestep below the start level; strength 1 starts from pure noise.
SAMPLERS: list[tuple[str, str, int | None, float]] = [
    ("strength 1 (from pure noise)", "ddim", 25, 1.0),
    ("DDPM", "ddpm", None, 0.1),
    ("DDIM-10", "ddim", 10, 0.1),
    ("DDIM-20", "ddim", 20, 0.1),
    ("DDIM-50", "ddim", 50, 0.1),
]
ABLATION_DATASETS = ("batadal", "etth1")
REFERENCES = {
    "real_random_half": "real, random half (floor)",
    "real_time_half": "real, time half (floor)",
    "real_unseen_stretches": "real, unseen stretches (fresh-data floor)",
    "iid": "i.i.d. marginals (baseline)",
    "var1": "VAR(1) (baseline)",
}


@dataclass(frozen=True)
class RunSettings:
    quick: bool
    seq_len: int = 24
    max_windows: int = 10_000
    scores: ScoreSettings = field(default_factory=ScoreSettings)
    #: Ablation variants are scored with fewer runs of the same protocol (2 instead of 5): 8 retrained
    #: variants per dataset at 5 runs would take about 4 hours on 2 cores.
    ablation_scores: ScoreSettings = field(default_factory=lambda: ScoreSettings(runs=2))
    #: Extra overrides on every trained config (quick mode: far fewer steps); empty = the true default.
    train_overrides: dict[str, Any] = field(default_factory=dict)
    #: Sequences of twice the window length for the ACF picture (lags 0..24 need 25+ steps).
    acf_sequences: int = 512
    seed: int = 0


FULL = RunSettings(quick=False)
QUICK = RunSettings(
    quick=True,
    max_windows=1000,
    scores=ScoreSettings(disc_iterations=300, pred_iterations=300, runs=2),
    ablation_scores=ScoreSettings(disc_iterations=300, pred_iterations=300, runs=1),
    train_overrides={"training": {"max_steps": 200, "eval_every": 100}, "trend": {"epochs": 1}},
    acf_sequences=64,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="minutes, not hours: for development only")
    parser.add_argument("--datasets", help=f"comma-separated subset of {','.join(NAMES)}")
    parser.add_argument(
        "--ablations", action="store_true", help=f"also run the ablations on {ABLATION_DATASETS}"
    )
    parser.add_argument(
        "--reuse-references",
        action="store_true",
        help="take the floors and baselines (which do not depend on the model) from the last results of "
        "the same dataset and settings instead of recomputing them (~30 min per dataset)",
    )
    parser.add_argument(
        "--ablation-workers",
        type=int,
        default=1,
        metavar="N",
        help="retrain N ablation variants at once, one process each with one torch thread (at most the "
        "number of cores: each variant's training time stays comparable); the sampler variants run before, "
        "alone (default 1: one after another)",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    chosen = (
        args.datasets.split(",") if args.datasets else (["demo", "batadal"] if args.quick else list(NAMES))
    )
    unknown = sorted(set(chosen) - set(NAMES))
    if unknown:
        parser.error(f"unknown datasets {unknown}; choose from {list(NAMES)}")
    if not 1 <= args.ablation_workers <= (os.cpu_count() or 1):
        parser.error(f"--ablation-workers must be between 1 and the {os.cpu_count()} cores of this machine")
    torch.set_num_threads(default_threads())  # the CLI's policy: all cores but one

    log = Progress()
    results: dict[str, Any] = {
        "benchmark": "quality",
        "quick": settings.quick,
        "command": command_line(),
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "settings": {
            "seq_len": settings.seq_len,
            "max_windows": settings.max_windows,
            "scores": vars(settings.scores),
            "ablation_scores": vars(settings.ablation_scores),
            "train_overrides": settings.train_overrides,
        },
        "datasets": {},
        "skipped": {},
    }
    output = "quick/quality.json" if settings.quick else "quality.json"
    # Datasets not chosen this time keep their last results (each says which run made it), so the
    # datasets can be run on different occasions and the page still shows them all.
    previous = read_json(output) or {}
    results["datasets"] = {k: v for k, v in previous.get("datasets", {}).items() if k not in chosen}
    log(
        f"quality benchmark{' (QUICK)' if settings.quick else ''} on {chosen}: {describe_machine(results['machine'])}"
    )
    for name in chosen:
        try:
            dataset = load_dataset(name)
        except DatasetUnavailable as exc:
            log(f"skipping {exc}")
            results["skipped"][name] = str(exc)
            continue
        ablate = args.ablations and name in ABLATION_DATASETS
        references = (
            _previous_references(previous, name, results["settings"]) if args.reuse_references else None
        )
        workers = args.ablation_workers if ablate else 0
        results["datasets"][name] = run_dataset(dataset, settings, workers, references, log)
        if not ablate:
            _carry_ablations(previous.get("datasets", {}).get(name, {}), results["datasets"][name])
        finish(results, log.elapsed())
        results["datasets"][name]["run"] = {
            "command": results["command"],
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": dict(results["machine"]),
        }
        _write_merged(output, results, chosen)  # after every dataset: a long run keeps what it has finished
    finish(results, log.elapsed())
    log(f"wrote {_write_merged(output, results, chosen)}")
    log(f"updated {update_docs_section('quality', render(results), settings.quick)}")
    return 0


def _write_merged(output: str, results: dict[str, Any], chosen: list[str]) -> Path:
    """Write ``results``, keeping the datasets this run did not choose as the file has them *now*.

    Two runs on different datasets may overlap in time; re-reading the file just before writing keeps
    each one's datasets instead of the last writer restoring what was there when it started.
    """
    latest = read_json(output) or {}
    others = {k: v for k, v in latest.get("datasets", {}).items() if k not in chosen}
    mine = {k: v for k, v in results["datasets"].items() if k in chosen}
    results["datasets"] = {**others, **mine}
    return write_json(output, results)


def _carry_ablations(previous: dict[str, Any], current: dict[str, Any]) -> None:
    """Keep the last measured ablations when this run did not redo them, with the default they compared to."""
    if "ablations" not in previous:
        return
    ablations = dict(previous["ablations"])
    ablations.setdefault(
        "default",
        {
            **previous["results"]["model"],
            "train_seconds": previous["train_seconds"],
            "generate_seconds": previous["generate_seconds"],
        },
    )
    current["ablations"] = ablations
    current["ablation_runs"] = previous.get("ablation_runs", 2)
    current["ablation_workers"] = previous.get("ablation_workers", 1)
    current["ablations_run"] = previous.get("ablations_run", previous.get("run"))


def _previous_references(
    previous: dict[str, Any], name: str, run_settings: dict[str, Any]
) -> dict[str, Any] | None:
    """The reference rows of the last run of ``name`` (those it has), if it used the same windows and score
    protocol."""
    if previous.get("settings", {}).get("scores") != run_settings["scores"]:
        return None
    for key in ("seq_len", "max_windows"):
        if previous.get("settings", {}).get(key) != run_settings[key]:
            return None
    results = previous.get("datasets", {}).get(name, {}).get("results", {})
    return {key: results[key] for key in REFERENCES if key in results}


def run_dataset(
    dataset: BenchDataset,
    settings: RunSettings,
    ablation_workers: int,
    references: dict[str, Any] | None,
    log: Progress,
) -> dict[str, Any]:
    """Train, generate and measure the default model of ``dataset`` beside the references; with
    ``ablation_workers`` > 0 also the ablations, that many config variants at a time."""
    name = dataset.name
    config = _config(dataset, settings, {})
    bundle, train_seconds = _train(dataset, config, f"{name}: default", log)
    names, kinds = bundle.schema.names(), bundle.schema.kinds
    series = real_series(dataset, bundle.schema)
    real, starts = series.windows(settings.seq_len)
    n = min(len(real), settings.max_windows)
    pairs = flow_state_pairs(names, series.values[None])
    synthetic, generate_seconds = _generate(bundle, n, settings.seq_len, None, None, f"{name}: default", log)

    stretches = stretch_labels(starts, settings.seq_len)
    model, report = evaluate(
        real, synthetic, names, kinds, pairs, settings.scores, f"{name}: model", log, real_stretches=stretches
    )
    # The fresh-data floor's real side is half the stretches; the model against that same half is the
    # like-for-like comparison (fewer real windows make every score higher).
    halves = unseen_stretches(starts, real, _reference_rng(settings, "real_unseen_stretches"))
    log(f"{name}: model: discriminative score against the seen stretches ({settings.scores.runs} runs)")
    model["discriminative_seen"] = discriminative_score(halves[0], synthetic, settings.scores)
    continuous = [i for i, feature in enumerate(names) if kinds[feature] == "continuous"]
    if continuous:
        log(f"{name}: distance of synthetic windows to the closest real window")
        model["closest_real"] = closest_real_distance(
            real, starts, synthetic, continuous, np.random.default_rng(settings.seed)
        )
    out: dict[str, Any] = {
        "source": dataset.source,
        "rows": len(series.values),
        "features": {
            kind: sum(k == kind for k in kinds.values()) for kind in ("continuous", "discrete", "constant")
        },
        "real_windows": len(real),
        "synthetic_windows": n,
        "train_seconds": train_seconds,
        "denoiser": {
            key: bundle.manifest["training"].get(key) for key in ("steps", "best_step", "stopped_by")
        },
        "generate_seconds": generate_seconds,
        "sampler": {"name": config.sampling.sampler, "steps": config.sampling.steps},
        # The strength the model samples at: training's choice (training.choose_strength), with both scores.
        "strength": bundle.config.sampling.strength,
        "strength_choice": bundle.manifest.get("strength_choice"),
        "real_flow_state_agreement": flow_state_agreement(real, names, pairs),
        "results": {"model": model},
    }
    references = dict(references or {})
    if references:
        log(f"{name}: {', '.join(references)} reused from the previous run with the same settings")
        out["references_reused"] = sorted(references)
    for key in REFERENCES:
        if key in references and "window_ks" in references[key]:
            continue
        left, right, left_stretches, right_stretches = _reference_windows(
            key, series, real, starts, halves, n, kinds, names, _reference_rng(settings, key), settings.seq_len
        )
        if key in references:
            # Reused from a run before the window statistics: only they are computed (in seconds); the
            # same draws give the same windows.
            log(f"{name}: {key}: window statistics")
            references[key] = {**references[key], "window_ks": window_statistics_ks(left, right, names, kinds)}
            continue
        references[key] = evaluate(
            left,
            right,
            names,
            kinds,
            pairs,
            settings.scores,
            f"{name}: {REFERENCES[key]}",
            log,
            real_stretches=left_stretches,
            synthetic_stretches=right_stretches,
        )[0]
    out["results"].update({key: references[key] for key in REFERENCES})
    floor = out["results"]["real_unseen_stretches"]
    floor.setdefault("discriminative_seen", floor["discriminative"])  # seen against unseen, by definition
    out["figures"] = _figures(name, bundle, series, real, synthetic, report, settings, log)
    if ablation_workers:
        out["ablation_runs"] = settings.ablation_scores.runs
        out["ablation_workers"] = ablation_workers
        out["ablations"] = _ablations(
            dataset, bundle, out, real, stretches, names, kinds, pairs, settings, ablation_workers, log
        )
    return out


def _reference_windows(
    key: str,
    series: RealSeries,
    real: np.ndarray,
    starts: np.ndarray,
    halves: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    n: int,
    kinds: dict[str, str],
    names: list[str],
    rng: np.random.Generator,
    seq_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The two window sets a reference compares, and the stretches of each side that is split by stretch
    (only the fresh-data floor's: see ``evaluate``)."""
    if key == "real_random_half":
        return (*random_halves(real, rng), None, None)
    if key == "real_time_half":
        return (*time_halves(starts, real, len(series.values)), None, None)
    if key == "real_unseen_stretches":
        seen, seen_stretches, unseen, unseen_stretches_ = halves
        return seen, unseen, seen_stretches, unseen_stretches_
    if key == "iid":
        return real, iid_sample(series.values, n, seq_len, rng), None, None
    if key == "var1":
        return real, _var1_windows(series, real, n, kinds, names, rng), None, None
    raise ValueError(f"unknown reference {key!r}")


def _reference_rng(settings: RunSettings, key: str) -> np.random.Generator:
    """Each reference its own draws, so that any subset of them can be redone alone (and the model be
    compared with the same half of the stretches as the fresh-data floor)."""
    return np.random.default_rng([settings.seed, list(REFERENCES).index(key)])


def evaluate(
    real: np.ndarray,
    synthetic: np.ndarray,
    names: list[str],
    kinds: dict[str, str],
    pairs: list[tuple[str, str]],
    scores: ScoreSettings,
    label: str,
    log: Progress,
    real_stretches: np.ndarray | None = None,
    synthetic_stretches: np.ndarray | None = None,
) -> tuple[dict[str, Any], Any]:
    """Every metric of one (real, synthetic) pair of window sets; also the per-feature report.

    ``synthetic_stretches`` mark a real stand-in for fresh data: that side is split by stretch in every
    discriminative score (its windows must be new to each other as a generator's are). With
    ``real_stretches`` the discriminative score is also measured with the real side split by stretch
    (``discriminative_unseen``): no real test window then has a neighbour among the real training windows.
    """
    log(f"{label}: marginals, ACF, correlations ({len(real)} vs {len(synthetic)} windows)")
    metrics, report = marginal_metrics(real, synthetic, names, kinds)
    metrics.update(
        n_real=len(real),
        n_synthetic=len(synthetic),
        acf_lag1_error=lag1_acf_error(real, synthetic),
        correlation_error=correlation_error(real, synthetic),
        flow_state_agreement=flow_state_agreement(synthetic, names, pairs),
        window_ks=window_statistics_ks(real, synthetic, names, kinds),
    )
    log(f"{label}: discriminative score ({scores.runs} x {scores.disc_iterations} iterations)")
    metrics["discriminative"] = discriminative_score(
        real, synthetic, scores, synthetic_stretches=synthetic_stretches
    )
    if real_stretches is not None:
        log(f"{label}: discriminative score, real test stretches unseen ({scores.runs} runs)")
        metrics["discriminative_unseen"] = discriminative_score(
            real, synthetic, scores, real_stretches, synthetic_stretches
        )
    log(f"{label}: predictive score ({scores.runs} x {scores.pred_iterations} iterations)")
    metrics["predictive"] = predictive_score(real, synthetic, scores)
    log(
        f"{label}: KS mean {fmt(metrics['ks_mean'])}, disc {fmt(metrics['discriminative'])}, "
        f"pred {fmt(metrics['predictive'])}"
    )
    return metrics, report


def _config(dataset: BenchDataset, settings: RunSettings, ablation: dict[str, Any]) -> TSSynthConfig:
    return (
        TSSynthConfig()
        .with_overrides(dataset.data_overrides)
        .with_overrides(settings.train_overrides)
        .with_overrides(ablation)
    )


def _train(
    dataset: BenchDataset, config: TSSynthConfig, label: str, log: Progress
) -> tuple[ModelBundle, float]:
    last_stage, last_at = [""], [0.0]

    def report(progress: TrainProgress) -> None:
        # One line per stage change, and at most one every 15 s within a stage.
        now = time.monotonic()
        if progress.stage != last_stage[0] or now - last_at[0] >= 15 or progress.step == progress.total:
            loss = f" loss {progress.loss:.4f}" if progress.loss is not None else ""
            log(f"{label}: training {progress.stage} {progress.step}/{progress.total}{loss}")
            last_stage[0], last_at[0] = progress.stage, now

    started = time.monotonic()
    bundle = train(dataset.frame, config, progress=report)
    return bundle, round(time.monotonic() - started, 1)


def _generate(
    bundle: ModelBundle,
    n: int,
    length: int,
    sampler: str | None,
    steps: int | None,
    label: str,
    log: Progress,
) -> tuple[np.ndarray, float]:
    started = time.monotonic()
    last_print = started
    chunks, done = [], 0
    for chunk in iter_generate(bundle, n, seq_len=length, seed=1, sampler=sampler, steps=steps):
        chunks.append(frame_to_windows(chunk, bundle.schema.names()))
        done += len(chunks[-1])
        if time.monotonic() - last_print >= 15 or done == n:
            log(f"{label}: generated {done}/{n} windows")
            last_print = time.monotonic()
    return np.concatenate(chunks), round(time.monotonic() - started, 1)


def _var1_windows(
    series: RealSeries,
    real: np.ndarray,
    n: int,
    kinds: dict[str, str],
    names: list[str],
    rng: np.random.Generator,
) -> np.ndarray:
    """VAR(1) rolled out from the first rows of randomly chosen real windows, then snapped to the support."""
    model = fit_var1(series.values, series.segments)
    first_rows = real[rng.choice(len(real), size=n, replace=len(real) < n), 0]
    windows = model.simulate(first_rows, real.shape[1], rng)
    return snap_to_support(windows, series.values, [kinds[name] for name in names])


def _figures(
    name: str,
    bundle: ModelBundle,
    series: RealSeries,
    real: np.ndarray,
    synthetic: np.ndarray,
    report: Any,
    settings: RunSettings,
    log: Progress,
) -> dict[str, Any]:
    log(f"{name}: figures")
    names = series.names
    folder = page_dir(settings.quick) / "img" / "quality" / name
    shutil.rmtree(folder, ignore_errors=True)  # the worst features change between runs: no stale pictures
    varying = [f for f in names if bundle.schema.feature(f).kind != "constant"]
    # ACF beyond the training window: sequences twice as long, so lags 0..24 exist on both sides.
    long_length = 2 * settings.seq_len
    long_real, _ = series.windows(long_length)
    long_syn, _ = _generate(
        bundle, settings.acf_sequences, long_length, None, None, f"{name}: ACF sequences", log
    )
    acf_gap = np.abs(pooled_acf(real, 1)[1] - pooled_acf(synthetic, 1)[1])
    by_acf_gap = sorted(varying, key=lambda f: -np.nan_to_num(acf_gap[names.index(f)], nan=1.0))[:8]
    shown = [f for f in report.summary.worst_features if f in varying][:2]
    shown += [f for f in varying if f not in shown][: 4 - len(shown)]
    picks = np.random.default_rng(settings.seed).choice(len(real), size=3, replace=False)
    rel = Path("img") / "quality" / name
    return {
        "cdf": [
            str(rel / "cdf" / p.name)
            for p in plots.worst_cdfs(real, synthetic, names, report, folder / "cdf")
        ],
        "acf": str(
            rel
            / plots.acf_curves(
                long_real, long_syn, names, by_acf_gap, settings.seq_len, folder / "acf.png"
            ).name
        ),
        "sequences": str(
            rel
            / plots.sequences_side_by_side(
                real[picks], synthetic, names, shown, folder / "sequences.png"
            ).name
        ),
    }


def _ablations(
    dataset: BenchDataset,
    default_bundle: ModelBundle,
    default: dict[str, Any],
    real: np.ndarray,
    real_stretches: np.ndarray,
    names: list[str],
    kinds: dict[str, str],
    pairs: list[tuple[str, str]],
    settings: RunSettings,
    workers: int,
    log: Progress,
) -> dict[str, Any]:
    """Resample the default model with each sampler, then retrain each config ablation, ``workers`` at a time.

    The samplers go first and alone, so their generation times are not shared with a training; the config
    variants are independent trainings with fixed seeds, so running them side by side (each in its own
    process with one torch thread) changes their wall time, not their results. Every row also has the
    score with the real test windows from unseen stretches (``evaluate``), the like-for-like one.
    """
    n = default["synthetic_windows"]
    samplers: dict[str, Any] = {}
    default_sampling = default_bundle.config.sampling
    for label, sampler, steps, strength in SAMPLERS:
        if (sampler, steps, strength) == (default_sampling.sampler, default_sampling.steps, default_sampling.strength):
            samplers[label] = {
                "sampler": sampler,
                "steps": steps,
                "same_as_default": True,
                "generate_seconds": default["generate_seconds"],
                **default["results"]["model"],
            }
            continue
        tag = f"{dataset.name}: sampler {label}"
        synthetic, generate_seconds = _generate(default_bundle.with_sampling(strength=strength), n, settings.seq_len, sampler, steps, tag, log)
        metrics, _ = evaluate(
            real, synthetic, names, kinds, pairs, settings.ablation_scores, tag, log, real_stretches=real_stretches
        )
        samplers[label] = {"sampler": sampler, "steps": steps, "strength": strength, "generate_seconds": generate_seconds, **metrics}

    variants = [
        (label, overrides)
        for label, overrides in ABLATIONS
        if not _same_as_default(overrides, kinds, default_bundle)
    ]
    arguments = [
        (dataset, settings, label, overrides, real, real_stretches, names, kinds, pairs, n, log)
        for label, overrides in variants
    ]
    if workers > 1:
        threads = max(1, torch.get_num_threads() // workers)
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        with ProcessPoolExecutor(workers, mp_context=spawn, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
            futures = [pool.submit(_config_ablation, *args) for args in arguments]
            trained = [future.result() for future in futures]
    else:
        trained = [_config_ablation(*args) for args in arguments]
    return {**{label: row for (label, _), row in zip(variants, trained, strict=True)}, **samplers}


def _same_as_default(overrides: dict[str, Any], kinds: dict[str, str], default_bundle: ModelBundle) -> bool:
    """Whether a config ablation would retrain the default model itself on this dataset."""
    trend = overrides.get("trend", {})
    if (trend.get("discrete_states") is False or trend.get("state_lead") is False) and "discrete" not in kinds.values():
        return True  # stage 1 has no states to read or lead with
    return trend.get("calendar") is False and not default_bundle.schema.calendar_periods  # no cycle seen


def _config_ablation(
    dataset: BenchDataset,
    settings: RunSettings,
    label: str,
    overrides: dict[str, Any],
    real: np.ndarray,
    real_stretches: np.ndarray,
    names: list[str],
    kinds: dict[str, str],
    pairs: list[tuple[str, str]],
    n: int,
    log: Progress,
) -> dict[str, Any]:
    """Retrain the default with ``overrides``, generate ``n`` windows and measure them (one ablation row)."""
    tag = f"{dataset.name}: ablation '{label}'"
    bundle, train_seconds = _train(dataset, _config(dataset, settings, overrides), tag, log)
    synthetic, generate_seconds = _generate(bundle, n, settings.seq_len, None, None, tag, log)
    metrics, _ = evaluate(
        real, synthetic, names, kinds, pairs, settings.ablation_scores, tag, log, real_stretches=real_stretches
    )
    return {"overrides": overrides, "train_seconds": train_seconds, "generate_seconds": generate_seconds, **metrics}


_METRIC_ROWS: list[tuple[str, str]] = [
    ("KS mean (continuous) ↓", "ks_mean"),
    ("KS max (continuous) ↓", "ks_max"),
    ("TVD mean (discrete) ↓", "tvd_mean"),
    ("invalid discrete values ↓", "invalid_share"),
    ("constant columns exact", "constant_exact"),
    ("lag-1 ACF error ↓", "acf_lag1_error"),
    ("correlation-matrix error ↓", "correlation_error"),
    ("KS of window means, mean over continuous features ↓", "window_ks.mean"),
    ("KS of window standard deviations ↓", "window_ks.std"),
    ("KS of window mean absolute steps ↓", "window_ks.step"),
    ("discriminative score ↓", "discriminative"),
    ("discriminative score, real test stretches unseen ↓", "discriminative_unseen"),
    ("discriminative score, real side = seen stretches ↓", "discriminative_seen"),
    ("predictive score (MAE) ↓", "predictive"),
    ("pump flow/state agreement ↑", "flow_state_agreement"),
]
#: The metrics of the ablation tables and of "better than the baselines on every metric"; lower is better.
_COMPARED_METRICS = [
    "ks_mean",
    "tvd_mean",
    "acf_lag1_error",
    "correlation_error",
    "discriminative",
    "predictive",
]
#: The ablation tables' columns: the compared metrics and, beside the published score, the one whose real test
#: windows come from stretches the classifier has not seen (absent, "-", in runs from before it).
_ABLATION_METRICS = [*_COMPARED_METRICS[:5], "discriminative_unseen", *_COMPARED_METRICS[5:]]
#: The issue's targets (full run, default config, 2 CPU cores): (label, metric, bound, "<=" or ">=").
TARGETS: dict[str, list[tuple[str, str, float, str]]] = {
    "batadal": [
        ("discriminative score", "discriminative", 0.05, "<="),
        ("KS mean", "ks_mean", 0.03, "<="),
        ("lag-1 ACF error", "acf_lag1_error", 0.03, "<="),
        ("correlation error", "correlation_error", 0.03, "<="),
        ("TVD mean", "tvd_mean", 0.01, "<="),
        ("invalid discrete values", "invalid_share", 0.0, "<="),
        ("pump flow/state agreement", "flow_state_agreement", 0.999, ">="),
    ],
    "etth1": [
        ("discriminative score", "discriminative", 0.05, "<="),
        ("predictive score", "predictive", 0.121, "<="),
    ],
}


def _value(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, dict):
        value = value.get("mean")
    return None if value is None else float(value)


def _targets(name: str, data: dict[str, Any]) -> list[str]:
    """Target, measured value and verdict per target of the issue; and the model vs each baseline."""
    model = data["results"]["model"]
    rows = []
    for label, key, bound, sense in TARGETS.get(name, []):
        value = _value(model, key)
        met = value is not None and (value <= bound if sense == "<=" else value >= bound)
        rows.append([label, f"{sense} {bound:g}", _cell(model, key), "met" if met else "**missed**"])
    if name == "batadal":
        exact, total = model.get("constant_exact"), model.get("constant_columns")
        rows.append(
            [
                "constant columns exact",
                f"{total}/{total}",
                f"{exact}/{total}",
                "met" if exact == total else "**missed**",
            ]
        )
    for baseline in ("iid", "var1"):
        if baseline not in data["results"]:
            continue
        other = data["results"][baseline]
        pairs = {key: (_value(model, key), _value(other, key)) for key in _COMPARED_METRICS}
        compared = {
            key: (mine, theirs)
            for key, (mine, theirs) in pairs.items()
            if mine is not None and theirs is not None
        }
        worse = [key for key, (mine, theirs) in compared.items() if mine > theirs]
        rows.append(
            [
                f"better than {REFERENCES[baseline]}",
                "every metric",
                f"{len(compared) - len(worse)}/{len(compared)}"
                + (f" (not: {', '.join(worse)})" if worse else ""),
                "met" if not worse else "**missed**",
            ]
        )
    if not rows:
        return []
    return ["Targets of the benchmark issue:", "", table(["target", "bound", "model", "verdict"], rows), ""]


def _closest_real(closest: dict[str, float] | None) -> list[str]:
    if not closest:
        return []
    share = round(100 * closest["natural_quantile"])
    return [
        "Copying check (`closest_real_distance` in bench/metrics.py): the median synthetic window lies "
        f"{closest['synthetic_median']:.2f} from its closest real window, real windows lie "
        f"{closest['real_median']:.2f} from the closest real window of another period (ratio {closest['ratio']:.2f}; "
        f"well below 1 would mean replayed training data); {100 * closest['copy_share']:.1f} % of synthetic windows "
        f"are closer to a real one than {100 - share} % of real windows are to another period (about {share} % "
        "expected of fresh data).",
        "",
    ]


def _first_runs(metrics: dict[str, Any], n: int) -> dict[str, Any]:
    """``metrics`` with the repeated scores cut to their first ``n`` runs (the ablations' protocol).

    Run ``i`` of every score uses seed ``i``, so the first ``n`` runs of the default are exactly what the
    variants were measured with; comparing a 5-run mean with 2-run means would mix protocols.
    """
    out = dict(metrics)
    for key in ("discriminative", "discriminative_unseen", "predictive"):
        runs = (metrics.get(key) or {}).get("runs") or []
        if len(runs) >= n:
            out[key] = {"mean": float(np.mean(runs[:n])), "std": float(np.std(runs[:n])), "runs": runs[:n]}
    return out


def _cell(metrics: dict[str, Any], key: str) -> str:
    if key.startswith("window_ks."):
        return fmt((metrics.get("window_ks") or {}).get("mean", {}).get(key.removeprefix("window_ks.")))
    value = metrics.get(key)
    if key == "constant_exact":
        return f"{value}/{metrics['constant_columns']}" if metrics.get("constant_columns") else "-"
    if key == "flow_state_agreement":
        return "-" if value is None else f"{100 * value['mean']:.1f} %"
    return fmt(value)


def _worst_window_statistics(results: dict[str, Any], n: int = 6) -> list[str]:
    """The model's window statistics furthest from the real ones, each beside the fresh-data floor's KS for
    the same statistic (what data new to the real windows scores): where a model change should aim."""
    model = (results["model"].get("window_ks") or {}).get("features")
    if not model:
        return []
    floor = (results.get("real_unseen_stretches", {}).get("window_ks") or {}).get("features", {})
    worst = sorted(
        ((ks, feature, key) for feature, values in model.items() for key, ks in values.items()), reverse=True
    )[:n]
    label = {"mean": "mean", "std": "std", "step": "mean |step|"}
    cells = [
        f"{feature} {label[key]} {fmt(ks)} ({fmt(floor.get(feature, {}).get(key))})" for ks, feature, key in worst
    ]
    return [f"Window statistics furthest from the real ones (model KS, fresh-data floor in brackets): {', '.join(cells)}.", ""]


def _denoiser_steps(data: dict[str, Any]) -> str:
    """How long the denoiser trained, and what stopped it (results from before this was recorded have none)."""
    denoiser = data.get("denoiser")
    if not denoiser or denoiser.get("steps") is None:
        return ""
    why = {"time_budget": "the time budget", "early_stopping": "early stopping", "max_steps": "max_steps"}
    reason = why.get(denoiser.get("stopped_by"), str(denoiser.get("stopped_by")))
    return f" ({denoiser['steps']} denoiser steps, stopped by {reason})"


def _strength(data: dict[str, Any]) -> str:
    """The sampling strength and how training chose it (results from before this was recorded have none)."""
    if data.get("strength") is None:
        return ""
    choice = data.get("strength_choice")
    if not choice:
        return f", strength {data['strength']:g}"
    scores = ", ".join(
        f"{gap:.3f} at {strength:g}" for strength, gap in zip(choice["candidates"], choice["discrimination_gaps"], strict=True)
    )
    return f", strength {data['strength']:g}, chosen by training: one classifier run scored {scores}"


def render(results: dict[str, Any]) -> str:
    """The quality section of docs/benchmarks.md, entirely from the results JSON."""
    scores = results["settings"]["scores"]
    lines = ["## Quality", ""]
    if results["quick"]:
        lines += [
            "> **QUICK RUN (development only)**: few training steps, few windows, shortened disc/pred scores.",
            "> These numbers are not the benchmark; run the full command below.",
            "",
        ]
    lines += [
        f"Latest run: {describe_machine(results['machine'])}; took {results.get('elapsed_seconds', 0) / 60:.1f} min. "
        "Each dataset below names the run that measured it.",
        "",
        "Regenerate: `.venv/bin/python bench/quality.py --ablations` (everything), or one dataset at a time with "
        "`--datasets demo|batadal|etth1` (the other datasets keep their last results); `--reuse-references` keeps "
        "the floors and baselines of the last run (they do not depend on the model); `--ablation-workers 2` retrains "
        "two ablation variants at a time (one per core); `--quick` for a development check.",
        "",
        f"Windows of {results['settings']['seq_len']} steps (stride 1); at most {results['settings']['max_windows']:,} "
        "synthetic windows per dataset, all in original units. Discriminative score: |accuracy - 0.5| of a post-hoc "
        f"GRU classifier ({scores['disc_iterations']} iterations of batch {scores['batch_size']}); predictive score: MAE "
        f"on real windows of a GRU trained on synthetic ones ({scores['pred_iterations']} iterations); both mean ± std "
        f"of {scores['runs']} runs (TimeGAN protocol). Floors compare real windows with other real windows; baselines "
        "are trivial generators (see `bench/baselines.py`).",
        "",
        f"A stretch is {STRETCH_WINDOWS} window lengths of consecutive rows. The unseen-stretches floor scores the "
        "windows of a random half of the stretches against those of the other half, the latter split by stretch: "
        "data the classifier has not seen, as a perfect generator's windows would be. With a random split, a "
        "real test window has neighbours among the real training windows (one step apart, all rows but one "
        "shared), and the classifier can pass it by recognising them; the row *real test stretches unseen* "
        "splits the real side by stretch as well, so that it cannot. The fresh-data floor has only half the real "
        "windows on its real side, which raises the score; the row *real side = seen stretches* scores the model "
        "against that same half, like for like.",
        "",
    ]
    for name, skipped in results["skipped"].items():
        lines += [f"*{name}: skipped ({skipped}).*", ""]
    for name in sorted(results["datasets"], key=NAMES.index):
        lines += _render_dataset(name, results["datasets"][name])
    return "\n".join(lines)


def _render_dataset(name: str, data: dict[str, Any]) -> list[str]:
    features = data["features"]
    columns = ["model", *REFERENCES]
    header = ["metric", "**model**", *REFERENCES.values()]
    # A reference added after a dataset's last run shows as "-" until that dataset is run again.
    rows = [[label, *(_cell(data["results"].get(c, {}), key) for c in columns)] for label, key in _METRIC_ROWS]
    real_agreement = data["real_flow_state_agreement"]
    lines = [
        f"### {name}",
        "",
        f"{data['source']}: {data['rows']:,} rows; {features['continuous']} continuous, {features['discrete']} discrete, "
        f"{features['constant']} constant features; {data['real_windows']:,} real windows. Default model trained in "
        f"{data['train_seconds']:.0f} s{_denoiser_steps(data)}; {data['synthetic_windows']:,} windows generated in "
        f"{data['generate_seconds']:.0f} s "
        f"({data['sampler']['name']}, {data['sampler']['steps']} steps{_strength(data)})."
        + (
            f" Pump flow/state agreement in the real data: {100 * real_agreement['mean']:.1f} %."
            if real_agreement
            else ""
        ),
        "",
        *(
            [
                f"Measured by `{data['run']['command']}` (finished {data['run']['finished_at']}) on "
                f"{describe_machine(data['run']['machine'])}.",
                "",
            ]
            if "run" in data
            else []
        ),
        table(header, rows),
        "",
        *_targets(name, data),
        *_closest_real(data["results"]["model"].get("closest_real")),
        *_worst_window_statistics(data["results"]),
        f"Worst features (model): {', '.join(data['results']['model']['worst_features'])}.",
        "",
        "Sequences, real (left) and synthetic (right):",
        "",
        f"![{name} sequences]({data['figures']['sequences']})",
        "",
        "Autocorrelation, real vs synthetic, lags 0..24 (the features whose lag-1 ACF differs most):",
        "",
        f"![{name} ACF]({data['figures']['acf']})",
        "",
        "Distributions of the five worst features:",
        "",
        " ".join(f"![{Path(p).stem}]({p})" for p in data["figures"]["cdf"]),
        "",
    ]
    lines += _ablation_lines(name, data)
    return lines


def _ablation_lines(name: str, data: dict[str, Any]) -> list[str]:
    """The ablation table of one dataset (none if it has no ablations)."""
    if "ablations" not in data:
        return []
    header = [
        "variant",
        "KS mean",
        "TVD mean",
        "lag-1 ACF err",
        "corr err",
        "disc",
        "disc, unseen test",
        "pred",
        "flow/state",
        "train s",
        "gen s",
    ]
    default = _first_runs(
        data["ablations"].get(
            "default",
            {
                **data["results"]["model"],
                "train_seconds": data["train_seconds"],
                "generate_seconds": data["generate_seconds"],
            },
        ),
        data.get("ablation_runs", 2),
    )
    rows = [
        [
            "**default**",
            *(_cell(default, k) for k in _ABLATION_METRICS),
            _cell(default, "flow_state_agreement"),
            fmt(default["train_seconds"], 0),
            fmt(default["generate_seconds"], 0),
        ]
    ]
    for label, metrics in data["ablations"].items():
        if label == "default":
            continue
        rows.append(
            [
                label,
                *(_cell(metrics, k) for k in _ABLATION_METRICS),
                _cell(metrics, "flow_state_agreement"),
                fmt(metrics.get("train_seconds"), 0) if "train_seconds" in metrics else "(default)",
                fmt(metrics.get("generate_seconds"), 0),
            ]
        )
    return [
        f"#### Ablations on {name}",
        "",
        "Each row retrains (or, for samplers, resamples) the default with one change. Disc/pred: mean ± std "
        f"of {data.get('ablation_runs', 2)} runs, the default row included (its first "
        f"{data.get('ablation_runs', 2)} runs, same seeds)."
        + (
            f" The config variants were trained {data['ablation_workers']} at a time, one process per core "
            "with one torch thread each; the samplers ran before them, alone."
            if data.get("ablation_workers", 1) > 1
            else ""
        ),
        "",
        *(
            [
                f"Measured by an earlier run, `{data['ablations_run']['command']}` (finished "
                f"{data['ablations_run']['finished_at']}); its default model is the first row, the model "
                "in the table above is newer.",
                "",
            ]
            if data.get("ablations_run")
            else []
        ),
        table(header, rows),
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
