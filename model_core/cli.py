"""The ``tssynth`` command line.

Each subcommand is one ``_add_<name>_parser`` (its arguments, and its handler via ``set_defaults``)
plus one ``_cmd_<name>(args) -> int``; adding a subcommand means adding both and listing the
former in ``_PARSERS``. Expected failures (bad input files, mismatched tables) are user errors:
``main`` prints them as one ``error: ...`` line and returns 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from model_core.bundle import BundleError, load_bundle, save_bundle
from model_core.config import TSSynthConfig
from model_core.diagnostics import DiagnosticsReport, FeatureDiagnostic, diagnose, plot_cdfs
from model_core.generate import iter_generate
from model_core.schema import TableSchema, read_csv
from model_core.simulator import simulate_plant
from model_core.train import Progress, default_threads, train

_USER_ERROR = 2
_METRIC = {"continuous": "KS", "discrete": "TVD", "constant": "mismatch"}


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (OSError, ValueError, BundleError) as exc:
        # schema.DataError and diagnostics' ColumnMismatchError are ValueErrors; OSError covers unwritable outputs.
        print(f"error: {exc}", file=sys.stderr)
        return _USER_ERROR


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tssynth", description="Synthetic multivariate industrial time series."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in _PARSERS:
        add_parser(subparsers)
    return parser


def _add_demo_data_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo-data", help="write the built-in water-plant simulation as CSV")
    parser.add_argument("--rows", type=int, default=4000, help="number of rows (default 4000)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    parser.add_argument("--start", default="2024-01-01 00:00:00", help="first timestamp")
    parser.add_argument("--freq-minutes", type=int, default=60, help="minutes between rows (default 60)")
    parser.add_argument("--out", type=Path, default=Path("demo.csv"), help="output CSV (default demo.csv)")
    parser.set_defaults(handler=_cmd_demo_data)


def _cmd_demo_data(args: argparse.Namespace) -> int:
    frame = simulate_plant(rows=args.rows, seed=args.seed, start=args.start, freq_minutes=args.freq_minutes)
    frame.to_csv(_output(args.out), index=False)
    print(f"wrote {len(frame)} rows x {frame.shape[1] - 1} features to {args.out}")
    return 0


def _output(path: Path) -> Path:
    """``path`` with its folder created: ``--out data/plant.csv`` should not fail for want of ``data/``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _add_diagnose_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diagnose", help="compare a synthetic CSV with its reference, feature by feature"
    )
    parser.add_argument("--reference", type=Path, required=True, help="reference (real) CSV")
    parser.add_argument("--synthetic", type=Path, required=True, help="synthetic CSV")
    parser.add_argument("--timestamp-column", help="column that is a timestamp, not a feature")
    parser.add_argument("--json", type=Path, help="write the full report as JSON here")
    parser.add_argument("--csv", type=Path, help="write the per-feature table as CSV here")
    parser.add_argument("--plots", type=Path, help="write one CDF/frequency PNG per feature into this folder")
    parser.set_defaults(handler=_cmd_diagnose)


def _cmd_diagnose(args: argparse.Namespace) -> int:
    reference = _read(args.reference, "reference")
    synthetic = _read(args.synthetic, "synthetic")
    report = diagnose(reference, synthetic, timestamp_column=args.timestamp_column)
    print(format_report(report))
    if args.json:
        _output(args.json).write_text(report.model_dump_json(indent=2) + "\n")
    if args.csv:
        _output(args.csv).write_text(report.to_csv())
    if args.plots:
        paths = plot_cdfs(reference, synthetic, report, args.plots)
        print(f"\nwrote {len(paths)} plots to {args.plots}")
    return 0


def _read(path: Path, role: str) -> pd.DataFrame:
    try:
        return read_csv(path)
    except ValueError as exc:
        raise ValueError(f"{role} CSV {path}: {exc}") from exc


def format_report(report: DiagnosticsReport) -> str:
    """A fixed-width table of every feature, then the summary and the worst features."""
    width = max([len("feature"), *(len(f.name) for f in report.features)])
    lines = [
        f"{'feature':<{width}}  {'kind':<10}  {'metric':<8} {'value':>7}  {'acf ref':>7}  {'acf syn':>7}  label"
    ]
    for feature in report.features:
        metric = _METRIC[feature.kind]
        lines.append(
            f"{feature.name:<{width}}  {feature.kind:<10}  {metric:<8} {_num(feature.distance):>7}  "
            f"{_num(feature.acf_reference):>7}  {_num(feature.acf_synthetic):>7}  {feature.label}"
        )
    s = report.summary
    lines += [
        "",
        f"rows: reference {s.n_reference}, synthetic {s.n_synthetic}; "
        f"features: {s.n_continuous} continuous, {s.n_discrete} discrete, {s.n_constant} constant",
        f"KS mean {_num(s.ks_mean)}, max {_num(s.ks_max)}; TVD mean {_num(s.tvd_mean)}; "
        f"lag-1 ACF abs error mean {_num(s.acf_abs_error_mean)}",
        "worst: " + ", ".join(_worst(report.feature(name)) for name in s.worst_features),
    ]
    return "\n".join(lines)


def _worst(feature: FeatureDiagnostic) -> str:
    return f"{feature.name} ({_METRIC[feature.kind]} {_num(feature.distance)}, {feature.label})"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model on one CSV series and save it as a bundle")
    parser.add_argument("--data", type=Path, required=True, help="training CSV (one multivariate series)")
    parser.add_argument("--config", type=Path, help="config.json (defaults for every key it omits)")
    parser.add_argument("--out", type=Path, required=True, help="model directory to create, e.g. models/NAME")
    _add_threads_argument(parser)
    parser.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    config = TSSynthConfig.load(args.config) if args.config else TSSynthConfig()
    if args.out.exists():
        raise ValueError(f"{args.out} already exists; choose a new --out")
    frame = _read(args.data, "training")
    with ProgressBar() as bar:
        bundle = train(frame, config, progress=bar.update)
    save_bundle(bundle, args.out)
    training = bundle.manifest["training"]
    print(
        f"trained in {training['seconds']} s on {training['device']} "
        f"({training['steps']} denoiser steps, best at {training['best_step']}); saved to {args.out}"
    )
    if training["stopped_by"] == "time_budget":
        print(
            f"note: the {training['max_minutes']}-minute budget (training.max_minutes) allowed "
            f"{training['steps']} of training.max_steps {config.training.max_steps} denoiser steps; "
            "raise it, or set it to null, to train them all"
        )
    choice = bundle.manifest.get("strength_choice")
    if choice:
        print(strength_choice_line(choice))
    print(_couplings_line(bundle.schema))
    held_out = bundle.manifest["validation_rows"]
    against = f"{held_out} held-out rows" if held_out else "training rows, none held out"
    print(f"\nvalidation (generated windows vs {against}):")
    print(format_report(DiagnosticsReport.model_validate(bundle.manifest["validation"])))
    return 0


def strength_choice_line(choice: dict[str, Any]) -> str:
    """The manifest's ``strength_choice`` in one line: both scores and the rule that picked one."""
    configured, _ = choice["candidates"]
    gaps = ", ".join(f"{s:g}: {g:.3f}" for s, g in zip(choice["candidates"], choice["discrimination_gaps"], strict=True))
    rule = f"1 replaces {configured:g} only when lower by more than {choice['margin']:g}; " if "margin" in choice else ""
    return (
        f"sampling.strength {choice['chosen']:g} chosen (training.choose_strength): a real-vs-synthetic "
        f"classifier's |accuracy - 0.5| at each strength {gaps} ({rule}took {choice['seconds']} s)"
    )


def _couplings_line(schema: TableSchema) -> str:
    """Which laws of the data every generated row will obey: users should not have to open schema.json."""
    exact = [f"{c.continuous}/{c.discrete}" for c in schema.couplings]
    ranges = [f"{c.continuous}/{c.discrete}" for c in schema.range_couplings]
    if not exact and not ranges:
        return "couplings enforced: none (no continuous/discrete pair is tied on every training row)"
    return (
        f"couplings enforced (seen on every training row): {len(exact)} exact ({', '.join(exact) or '-'}), "
        f"{len(ranges)} per-state ranges ({', '.join(ranges) or '-'})"
    )


def _add_sample_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sample", help="generate synthetic sequences from a trained model")
    parser.add_argument("--model", type=Path, required=True, help="model directory made by `tssynth train`")
    parser.add_argument("--n", type=int, default=100, help="number of sequences (default 100)")
    parser.add_argument("--seq-len", type=int, help="steps per sequence (default: the training window)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--sampler", choices=["ddpm", "ddim"], help="default: the model's config")
    parser.add_argument("--steps", type=int, help="DDIM steps (default: the model's config)")
    parser.add_argument("--out", type=Path, required=True, help="output CSV (long format)")
    _add_threads_argument(parser)
    parser.set_defaults(handler=_cmd_sample)


def _add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=default_threads(), help="torch CPU threads (default: all cores but one)"
    )


def _cmd_sample(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model)
    rows = 0
    with open(_output(args.out), "w", newline="") as handle:
        for index, chunk in enumerate(
            iter_generate(bundle, args.n, args.seq_len, args.seed, args.sampler, args.steps)
        ):
            chunk.to_csv(handle, index=False, header=index == 0)
            rows += len(chunk)
    print(f"wrote {args.n} sequences ({rows} rows) to {args.out}")
    return 0


class ProgressBar:
    """A tqdm bar per training stage, fed by ``train``'s progress callback."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._stage = ""

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, progress: Progress) -> None:
        if progress.stage != self._stage:
            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=progress.total, desc=progress.stage, unit="step", file=sys.stderr)
            self._stage = progress.stage
        assert self._bar is not None
        self._bar.total = progress.total  # a time budget can shorten the denoiser's run
        self._bar.n = progress.step
        if progress.loss is not None:
            self._bar.set_postfix(loss=f"{progress.loss:.4f}", refresh=False)
        self._bar.refresh()


def _add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the REST service (trains the demo model first when the model directory is empty)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--model-dir", type=Path, help="model directory (default: $TSSYNTH_MODEL_DIR or models)")
    parser.add_argument(
        "--no-demo", action="store_true", help="do not train the demo model when no model exists"
    )
    parser.set_defaults(handler=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn  # here, not at the top: the other subcommands do not need the web stack

    # The service reads TSSYNTH_* settings; the flags are shorthands for two of them.
    if args.model_dir is not None:
        os.environ["TSSYNTH_MODEL_DIR"] = str(args.model_dir)
    if args.no_demo:
        os.environ["TSSYNTH_DEMO_BOOTSTRAP"] = "false"
    # By import string with factory=True: model_core never imports app (the engine does not depend on
    # the service), and uvicorn builds the app from the environment set above.
    uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port)
    return 0


_PARSERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo_data_parser,
    _add_diagnose_parser,
    _add_train_parser,
    _add_sample_parser,
    _add_serve_parser,
)


if __name__ == "__main__":
    sys.exit(main())
