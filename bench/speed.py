"""Speed benchmark on this machine's CPU: training, sampling, memory, and the real service over loopback.

* Engine, in process: default training on BATADAL (seconds per 1,000 denoiser steps and in total),
  sampling windows/s for the default (DDIM-25 from the rollout at strength 0.1), DDPM, and DDIM-10/20/50
  from pure noise (1,000 windows x 24 steps), peak resident memory.
* Service, as a subprocess (``uvicorn app.main:create_app --factory`` on a free 127.0.0.1 port, serving
  the demo model trained exactly as the service trains it for itself): ``POST /v1/models/demo/generate``
  64 x 24 latency with 1 and 8 concurrent clients, CSV export rows/s and server RSS growth for 1,000,000
  rows, and ``/healthz`` latency while a training job runs. Client and server share the same cores, so
  the latencies include the client's share of the CPU.

Results: ``bench/results/speed.json`` and the speed section of ``docs/benchmarks.md``; a ``--quick``
run writes both under ``bench/results/quick/`` instead (git-ignored), never over the published ones.

    .venv/bin/python bench/speed.py --quick     # a few minutes, for development
    .venv/bin/python bench/speed.py             # the full benchmark
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` and the engine importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from app.demo import DEMO_OVERRIDES
from bench.datasets import DatasetUnavailable, load_dataset
from bench.loopback import (
    RssSampler,
    call,
    download,
    latencies,
    probe_while,
    proc_status_kib,
    running_server,
    summarise_ms,
)
from bench.report import (
    Progress,
    command_line,
    describe_machine,
    finish,
    fmt,
    machine,
    read_json,
    table,
    update_docs_section,
    write_json,
)
from model_core.bundle import save_bundle
from model_core.config import TSSynthConfig
from model_core.diffusion import NoiseSchedule
from model_core.generate import generate
from model_core.samplers import make_sampler
from model_core.simulator import simulate_plant, write_demo_csv
from model_core.train import Progress as TrainProgress
from model_core.train import default_threads, train

#: (sampler, DDIM steps, sampling.strength): the default (DDIM-25 from the rollout at strength 0.1), then
#: every sampler from pure noise (strength 1), where all of its steps run.
SAMPLERS: list[tuple[str, int | None, float]] = [
    ("ddim", 25, 0.1),
    ("ddpm", None, 0.1),
    ("ddpm", None, 1.0),
    ("ddim", 10, 1.0),
    ("ddim", 20, 1.0),
    ("ddim", 50, 1.0),
]


@dataclass(frozen=True)
class SpeedSettings:
    quick: bool
    #: Extra overrides of the BATADAL training (quick: few steps); empty = the true default.
    train_overrides: dict[str, Any] = field(default_factory=dict)
    #: Extra overrides of the served demo model on top of the service's own demo overrides.
    demo_overrides: dict[str, Any] = field(default_factory=dict)
    sampling_windows: int = 1000
    requests: int = 100
    request_sequences: int = 64
    #: 41,666 x 24 = 999,984 rows: the most whole 24-step sequences within the service's 1,000,000-row cap.
    export_sequences: int = 41_666
    health_probe_s: float = 60.0
    deadline_s: float = 1200.0


FULL = SpeedSettings(quick=False)
QUICK = SpeedSettings(
    quick=True,
    train_overrides={"training": {"max_steps": 100, "eval_every": 50}, "trend": {"epochs": 1}},
    demo_overrides={"training": {"max_steps": 100, "eval_every": 50}, "trend": {"epochs": 1}},
    sampling_windows=100,
    requests=20,
    export_sequences=2_000,
    health_probe_s=20.0,
    deadline_s=300.0,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="minutes, not an hour: for development only")
    parser.add_argument("--skip-engine", action="store_true", help="only the service part")
    parser.add_argument("--skip-service", action="store_true", help="only the engine part")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    torch.set_num_threads(default_threads())  # the CLI's policy: all cores but one
    log = Progress()
    results: dict[str, Any] = {
        "benchmark": "speed",
        "quick": settings.quick,
        "command": command_line(),
        "machine": machine(),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    log(f"speed benchmark{' (QUICK)' if settings.quick else ''}: {describe_machine(results['machine'])}")
    if not args.skip_engine:
        try:
            results["engine"] = engine_speed(settings, log)
        except DatasetUnavailable as exc:
            log(f"skipping the engine part: {exc}")
            results["engine_skipped"] = str(exc)
    if not args.skip_service:
        results["service"] = service_speed(settings, log)
    # A part skipped this time keeps its last measurement, with the run that made it.
    previous = read_json("quick/speed.json" if settings.quick else "speed.json") or {}
    for part in ("engine", "service"):
        if part not in results and part in previous:
            results[part] = previous[part]
            results[f"{part}_run"] = previous.get(f"{part}_run") or {
                "command": previous["command"],
                "started_at": previous["started_at"],
                "machine": previous["machine"],
            }
    finish(results, log.elapsed())
    log(f"wrote {write_json('quick/speed.json' if settings.quick else 'speed.json', results)}")
    log(f"updated {update_docs_section('speed', render(results), settings.quick)}")
    return 0


def engine_speed(settings: SpeedSettings, log: Progress) -> dict[str, Any]:
    dataset = load_dataset("batadal")
    config = TSSynthConfig().with_overrides(dataset.data_overrides).with_overrides(settings.train_overrides)
    marks: dict[str, list[tuple[float, int]]] = {}

    def record(progress: TrainProgress) -> None:
        marks.setdefault(progress.stage, []).append((time.monotonic(), progress.step))
        if progress.step == progress.total or progress.step % 250 == 0:
            log(f"batadal: training {progress.stage} {progress.step}/{progress.total}")

    started = time.monotonic()
    bundle = train(dataset.frame, config, progress=record)
    total = time.monotonic() - started
    (t0, s0), (t1, s1) = marks["diffusion"][0], marks["diffusion"][-1]
    stage_seconds = {stage: points[-1][0] - points[0][0] for stage, points in marks.items()}
    out: dict[str, Any] = {
        "dataset": "batadal",
        "train_overrides": settings.train_overrides,
        "train_seconds": total,
        "stage_seconds": stage_seconds,
        "denoiser_steps": s1,
        "seconds_per_1000_denoiser_steps": 1000 * (t1 - t0) / max(s1 - s0, 1),
        "peak_rss_after_training_mib": _peak_rss_mib(),
        "strength": bundle.config.sampling.strength,
        "strength_choice": bundle.manifest.get("strength_choice"),
        "sampling": {},
    }
    n = settings.sampling_windows
    schedule = NoiseSchedule.make(bundle.config.diffusion.timesteps, bundle.config.diffusion.noise_schedule)
    for sampler, steps, strength in SAMPLERS:
        label = f"{sampler.upper()}{f'-{steps}' if steps else ''}, strength {strength:g}"
        log(f"batadal: sampling {n} windows with {label}")
        reverse = make_sampler(sampler, schedule)
        reverse.set_timesteps(steps)
        run = reverse.pairs_below(strength * schedule.timesteps) if strength < 1 else reverse.pairs()
        started = time.monotonic()
        generate(bundle.with_sampling(strength=strength), n, seq_len=24, seed=0, sampler=sampler, steps=steps)
        seconds = time.monotonic() - started
        out["sampling"][label] = {"windows": n, "reverse_steps": len(run), "seconds": seconds, "windows_per_s": n / seconds}
        log(f"batadal: {label}: {n / seconds:.1f} windows/s")
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def _strength_rows(engine: dict[str, Any]) -> list[list[str]]:
    """The strength training chose and what the choice took (runs from before it was recorded: none)."""
    choice = engine.get("strength_choice")
    if not choice:
        return []
    return [
        ["sampling.strength chosen by training", f"{engine['strength']:g}"],
        ["strength choice (within the training time)", f"{choice['seconds']:.0f} s, {choice['reserved_seconds']:.0f} s reserved"],
    ]


def service_speed(settings: SpeedSettings, log: Progress) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tssynth-bench-") as tmp:
        root = Path(tmp)
        log("service: training the demo model as the service trains it (app.demo.DEMO_OVERRIDES)")
        demo_config = TSSynthConfig().with_overrides(DEMO_OVERRIDES).with_overrides(settings.demo_overrides)
        (root / "data").mkdir()
        demo_csv = write_demo_csv(root / "data" / "demo.csv")
        bundle = train(simulate_plant(), demo_config)
        save_bundle(bundle, root / "models" / "demo" / "v1")
        token = secrets.token_urlsafe(24)
        env = {
            "TSSYNTH_MODEL_DIR": str(root / "models"),
            "TSSYNTH_DATASETS_DIR": str(demo_csv.parent),
            "TSSYNTH_ADMIN_TOKEN": token,
            "TSSYNTH_DEMO_BOOTSTRAP": "false",
        }
        with running_server(env, root / "server.log") as (port, pid):
            log(f"service: up on 127.0.0.1:{port} (pid {pid})")
            return _measure_service(port, pid, token, settings, log)


def _measure_service(
    port: int, pid: int, token: str, settings: SpeedSettings, log: Progress
) -> dict[str, Any]:
    out: dict[str, Any] = {"server_rss_start_mib": (proc_status_kib(pid, "VmRSS") or 0) / 1024}
    body = json.dumps({"n_sequences": settings.request_sequences, "seq_len": 24, "seed": 1}).encode()
    call(port, "POST", "/v1/models/demo/generate", body, {"Content-Type": "application/json"})  # warm-up
    out["generate"] = {}
    for clients in (1, 8):
        log(
            f"service: {settings.requests} generate requests ({settings.request_sequences}x24), {clients} client(s)"
        )
        result = latencies(
            port, settings.requests, clients, "POST", "/v1/models/demo/generate", body, settings.deadline_s
        )
        out["generate"][f"{clients}_clients"] = result
        log(f"service: p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms")

    rows = settings.export_sequences * 24
    log(f"service: CSV export of {rows:,} rows")
    query = urllib.parse.urlencode({"n_sequences": settings.export_sequences, "seq_len": 24, "seed": 2})
    with RssSampler(pid) as rss:
        export = download(port, f"/v1/models/demo/export.csv?{query}", settings.deadline_s)
    out["export"] = {**export, **rss.summary()}
    log(
        f"service: export {export['rows_per_s']:,.0f} rows/s, server RSS +{out['export']['growth_mib']:.0f} MiB"
    )

    out["healthz_idle"] = latencies(port, 200, 1, "GET", "/healthz", None, 60)
    out["healthz_during_training"] = _health_while_training(port, token, settings, log)
    out["server_peak_rss_mib"] = (proc_status_kib(pid, "VmHWM") or 0) / 1024
    return out


def _health_while_training(port: int, token: str, settings: SpeedSettings, log: Progress) -> dict[str, Any]:
    """Probe /healthz every 50 ms while a training job (the demo recipe) runs, then cancel the job."""
    auth = {"Authorization": f"Bearer {token}"}
    form = urllib.parse.urlencode(
        {"model": "bench-train", "dataset": "demo.csv", "overrides": json.dumps(DEMO_OVERRIDES)}
    ).encode()
    status, payload, _ = call(
        port, "POST", "/v1/admin/train", form, {**auth, "Content-Type": "application/x-www-form-urlencoded"}
    )
    if status != 202:
        raise RuntimeError(f"starting a training job answered {status}: {payload[:300]!r}")
    job_path = f"/v1/admin/jobs/{json.loads(payload)['id']}"
    state, checked = ["queued"], [0.0]

    def running() -> bool:
        # The job's state, looked up at most once a second: the probe must measure /healthz, not this.
        if time.monotonic() - checked[0] >= 1.0:
            state[0] = json.loads(call(port, "GET", job_path, headers=auth)[1])["state"]
            checked[0] = time.monotonic()
        return state[0] in ("queued", "running")

    deadline = time.monotonic() + 120
    while running() and state[0] == "queued" and time.monotonic() < deadline:
        time.sleep(0.2)
    log(f"service: probing /healthz for up to {settings.health_probe_s:.0f} s while the job is {state[0]}")
    times = probe_while(port, "/healthz", 0.05, settings.health_probe_s, running)
    final = state[0]
    if final in ("queued", "running"):
        call(port, "POST", f"{job_path}/cancel", headers=auth)
    return {**summarise_ms(times), "job_state_at_end": final}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def render(results: dict[str, Any]) -> str:
    """The speed section of docs/benchmarks.md, entirely from the results JSON."""
    lines = ["## Speed", ""]
    if results["quick"]:
        lines += [
            "> **QUICK RUN (development only)**: few training steps, few windows and requests.",
            "> These numbers are not the benchmark; run the full command below.",
            "",
        ]
    machine_line = describe_machine(results["machine"])
    lines += [
        f"Every figure below: {machine_line}. Run took {results['elapsed_seconds'] / 60:.1f} min.",
        "",
        f"Regenerate: `{results['command']}`",
        "",
    ]
    for part in ("engine", "service"):
        if f"{part}_run" in results:
            earlier = results[f"{part}_run"]
            lines += [
                f"The {part} part below comes from an earlier run, `{earlier['command']}` (started "
                f"{earlier['started_at']}) on {describe_machine(earlier['machine'])}.",
                "",
            ]
    engine = results.get("engine")
    if engine:
        overrides = (
            f" with overrides `{json.dumps(engine['train_overrides'])}`" if engine["train_overrides"] else ""
        )
        lines += [
            "### Engine (in process)",
            "",
            table(
                ["measure", "value"],
                [
                    [f"training on BATADAL, default config{overrides}", f"{engine['train_seconds']:.0f} s"],
                    ["denoiser steps run", str(engine["denoiser_steps"])],
                    [
                        "seconds per 1,000 denoiser steps",
                        f"{engine['seconds_per_1000_denoiser_steps']:.0f} s",
                    ],
                    *[[f"stage '{k}'", f"{v:.0f} s"] for k, v in engine["stage_seconds"].items()],
                    *_strength_rows(engine),
                    ["peak RSS after training", f"{engine['peak_rss_after_training_mib']:.0f} MiB"],
                    ["peak RSS after sampling", f"{engine['peak_rss_mib']:.0f} MiB"],
                ],
            ),
            "",
            table(
                ["sampler", "reverse steps run", "windows (x 24 steps)", "seconds", "windows/s"],
                [
                    [label, str(s.get("reverse_steps", "")), str(s["windows"]), f"{s['seconds']:.1f}", f"{s['windows_per_s']:.1f}"]
                    for label, s in engine["sampling"].items()
                ],
            ),
            "",
        ]
    elif "engine_skipped" in results:
        lines += [f"*Engine part skipped: {results['engine_skipped']}.*", ""]
    service = results.get("service")
    if service:
        gen, export = service["generate"], service["export"]
        rows = [
            [
                f"POST generate 64x24, {g['clients']} client(s)",
                fmt(g["p50_ms"], 0),
                fmt(g["p95_ms"], 0),
                f"{g['n']} requests, {g['requests_per_s']:.2f} req/s",
            ]
            for g in gen.values()
        ]
        for key, label in (
            ("healthz_idle", "GET /healthz, idle"),
            ("healthz_during_training", "GET /healthz, training job running"),
        ):
            h = service[key]
            rows.append([label, fmt(h["p50_ms"], 1), fmt(h["p95_ms"], 1), f"{h['n']} requests"])
        lines += [
            "### Service over loopback (demo model)",
            "",
            table(["request", "p50 ms", "p95 ms", "notes"], rows),
            "",
            table(
                ["CSV export", "value"],
                [
                    ["rows", f"{export['rows']:,}"],
                    ["size", f"{export['mib']:.0f} MiB"],
                    ["seconds (first byte after)", f"{export['seconds']:.1f} ({export['first_byte_s']:.2f})"],
                    ["rows/s", f"{export['rows_per_s']:,.0f}"],
                    ["server RSS at start of download", f"{export['start_mib']:.0f} MiB"],
                    ["server RSS growth during download", f"{export['growth_mib']:.0f} MiB"],
                ],
            ),
            "",
            f"Server peak RSS over the whole run (VmHWM): {service['server_peak_rss_mib']:.0f} MiB.",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
