"""Two-stage training: the trend model first, then the residual denoiser on what the trend leaves.

Splitting, and why generation recombines the same way (derivation in docs/DECISIONS.md): for a training
window starting at ``s`` with context ``c = x[s-C:s]``, ``trend = TemporalGRUGenerator.window_trend(c, x)``
and the diffusion learns ``r = (x - trend - mean) / std`` conditioned on ``trend`` and on the trend of the
step after each step. ``generate`` draws a trend by rollout from a real context and inverts exactly this
map: ``x = trend + r * std + mean``.

Validation is time-based: ``val_fraction`` of the rows, in blocks spread over the series, never trains a
weight; it drives early stopping of the denoiser (EMA weights, fixed noise, so the curve is comparable across
evaluations) and the final diagnostics written into the manifest.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pandas as pd
import torch

from model_core.bundle import ModelBundle, Pools, build_networks, trend_calendar_periods
from model_core.calendar import calendar_features, epoch_seconds
from model_core.config import TSSynthConfig
from model_core.diagnostics import diagnose
from model_core.diffusion import (
    ALIGNMENT_MIN_ALPHA_BAR,
    NoiseSchedule,
    discrete_loss,
    mask_tokens,
    min_snr_weight,
    quantile_alignment_loss,
    residual_stats_loss,
)
from model_core.discriminator import discrimination_gap, scale_with_real_range, single_thread
from model_core.generate import generate
from model_core.schema import DataError, PreparedTable, prepare_table
from model_core.transforms import FittedTransforms
from model_core.trend import TemporalGRUGenerator
from model_core.windows import window_starts

#: Rollout contexts and bootstrap residuals kept in the bundle. Every training row's residual up to the
#: cap: the nearest-trend search costs time linear in the pool (docs/DECISIONS.md, "one residual per row").
MAX_CONTEXTS = 2048
MAX_POOL_RESIDUALS = 8192
#: Stage 1 reads swapped innovations (``trend.swap_innovations``) from this epoch on: its residuals must
#: first be a model's residuals, not the error of an untrained one.
SWAP_FROM_EPOCH = 2
#: Validation blocks spread over the series (see ``split_by_time``).
VALIDATION_BLOCKS = 10
#: Windows generated for the validation diagnostics in the manifest.
VALIDATION_SEQUENCES = 256
#: training.choose_strength: real and synthetic windows per side, and classifier iterations. The protocol's
#: 2000 iterations are needed: 500 on 1024 windows told neither candidate from real data (docs/DECISIONS.md).
STRENGTH_CHOICE_WINDOWS = 2048
STRENGTH_CHOICE_ITERATIONS = 2000
#: Strength 1 replaces the configured strength only when it scores lower by more than this. On a tie the
#: configured start is kept: it generates several times faster (it runs only the reverse steps below its
#: level). One classifier run on BATADAL differs from the next by up to 0.06 on the same windows, and a
#: choice by 0.02 took the start that 5 runs then scored worse; the clear choices differ by 0.08 or more
#: (docs/DECISIONS.md).
STRENGTH_CHOICE_MARGIN = 0.05


@dataclass
class Progress:
    stage: str  # "prepare" | "trend" | "diffusion" | "validate"
    step: int
    total: int
    loss: float | None = None
    eta_seconds: float | None = None


class TrainingCancelled(Exception):
    """Raised when ``should_stop`` asked training to end; nothing is saved."""


ProgressCallback = Callable[[Progress], None]


def default_threads() -> int:
    """Torch threads for a training or sampling process: all cores but one.

    Small recurrent and attention kernels gain little from more threads, and OpenMP threads that
    compete for cores spin: on our 2-core machine a GRU step took 3 s with 2 threads beside another
    busy process, 0.09 s with 1. Leaving a core free keeps a server or a second job responsive.
    """
    return max(1, (os.cpu_count() or 2) - 1)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("training.device is 'cuda' but CUDA is not available on this machine")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(
    frame: pd.DataFrame,
    config: TSSynthConfig,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ModelBundle:
    """Fit transforms, the trend model and the residual denoiser on one series; return the bundle."""
    started = time.monotonic()
    report = progress or (lambda _: None)
    stop = should_stop or (lambda: False)
    torch.manual_seed(config.training.seed)
    generator = torch.Generator().manual_seed(config.training.seed)
    device = resolve_device(config.training.device)
    report(Progress("prepare", 0, 1))

    table = training_table(frame, config)
    transforms = FittedTransforms.fit(table.values, table.schema, config.transform)
    continuous, discrete = transforms.transform(table.values)
    train_segments, val_segments = split_by_time(table.segments, config)
    report(Progress("prepare", 1, 1))

    x = torch.as_tensor(continuous, dtype=torch.float32)
    tokens = torch.as_tensor(discrete)
    times = epoch_seconds(table.timestamps) if table.timestamps is not None else np.zeros(len(x))
    calendar = torch.as_tensor(calendar_features(times, trend_calendar_periods(config, table.schema)))
    trend_model, denoiser, ema = build_networks(config, table.schema, x.shape[1], transforms.n_categories)
    trend_losses: list[float] = []
    if trend_model is not None:
        trend_losses = _fit_trend(
            trend_model, x, tokens, calendar, train_segments, config, device, generator, report, stop
        )

    context_len, seq_len = config.trend.context_len, config.window.seq_len
    train_trend, train_starts = _window_trends(
        trend_model, x, tokens, calendar, train_segments, table.segments, config, device
    )
    train_residual = _window_residuals(x, train_trend, train_starts, seq_len)
    residual = train_residual.reshape(-1, x.shape[1])
    mean, std = residual.mean(0), residual.std(0).clamp_min(1e-6)
    pooled = _one_occurrence_per_row(train_starts, seq_len, generator)[:MAX_POOL_RESIDUALS]
    pooled_rows = _window_rows(train_starts, seq_len).reshape(-1)[pooled]
    context_rows = _sample_context_rows(train_segments, context_len, generator)
    pools = Pools(
        contexts=x[context_rows].numpy(),
        context_tokens=tokens[context_rows].numpy(),
        context_times=times[context_rows.numpy()],
        residuals=residual[pooled].numpy(),
        residual_trends=train_trend[:, :seq_len].reshape(-1, x.shape[1])[pooled].numpy(),
        residual_states=tokens[pooled_rows].numpy(),
        residual_mean=mean.numpy(),
        residual_std=std.numpy(),
        clip=max(4.0, 1.1 * float(((residual - mean) / std).abs().max())),
        residual_rows=pooled_rows.numpy().astype(np.int64),
        context_rows=context_rows[:, -1].numpy().astype(np.int64),
    )
    train_set = _diffusion_windows(train_residual, discrete, train_trend, train_starts, mean, std)
    val_trend, val_starts = _window_trends(trend_model, x, tokens, calendar, val_segments, table.segments, config, device)
    val_set = None
    if len(val_starts):
        val_residual = _window_residuals(x, val_trend, val_starts, config.window.seq_len)
        val_set = _diffusion_windows(val_residual, discrete, val_trend, val_starts, mean, std)

    denoiser.to(device)
    ema.to(device)
    budget = config.training.max_minutes
    deadline = None if budget is None else started + 60 * budget
    choosing = config.training.choose_strength and trend_model is not None and config.sampling.strength < 1
    reserved = 0.0
    if choosing and deadline is not None:
        # The strength choice runs after the denoiser, inside the budget: leave it the time it will take.
        untrained = ModelBundle(config, table.schema, transforms, trend_model, denoiser, ema, pools)
        reserved = _strength_choice_seconds(untrained)
        deadline -= reserved
    diffusion_log = _fit_denoiser(
        denoiser, ema, train_set, val_set, transforms.n_categories, config, device, generator, report, stop, deadline
    )

    bundle = ModelBundle(config, table.schema, transforms, trend_model, denoiser.eval(), ema.eval(), pools)
    strength_choice = None
    if choosing:
        strength_choice = {**_choose_strength(bundle, table, train_segments, report), "reserved_seconds": round(reserved, 1)}
        bundle = bundle.with_sampling(strength=strength_choice["chosen"])
    report(Progress("validate", 0, 1))
    validation = _validation_report(bundle, table, val_segments or train_segments)
    bundle.manifest = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "package_version": _package_version(),
        "data_sha256": hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest(),
        "rows": int(len(table.values)),
        "columns": table.schema.names(),
        "training": {
            "device": str(device),
            "seconds": round(time.monotonic() - started, 1),
            "trend_losses": trend_losses,
            **diffusion_log,
        },
        "validation": validation,
        **({"strength_choice": strength_choice} if strength_choice else {}),
        # Rows held out for validation (0: the diagnostics compare with training windows).
        "validation_rows": sum(b - a for a, b in val_segments),
    }
    report(Progress("validate", 1, 1))
    return bundle


def training_table(frame: pd.DataFrame, config: TSSynthConfig) -> PreparedTable:
    """The checks ``train`` starts with (the service runs them before it accepts a job): a valid table
    (``prepare_table``) with at least one continuous feature to model."""
    table = prepare_table(frame, config.data, config.window.seq_len)
    if not table.schema.names("continuous"):
        raise DataError(
            f"nothing to model: no continuous column (found {table.schema.kinds}); tssynth models continuous readings with "
            "their discrete states and constants beside them. A column with few integer levels is read as "
            "discrete: list it in data.continuous_columns to model it as continuous"
        )
    return table


def split_by_time(segments: list[tuple[int, int]], config: TSSynthConfig) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Hold out ``val_fraction`` of the rows as blocks spread evenly over time; the rest trains.

    The rows (in time order, across segments) are cut into up to ``VALIDATION_BLOCKS`` equal spans and the
    last ``val_fraction`` of each span validates. One block at the end of the series kept its newest
    regime out of training: ETTh1's last 10 % of rows hold oil temperatures the model never learned
    (docs/DECISIONS.md, "Validation blocks spread over the series"). Each block holds at least two
    windows; a piece of a segment shorter than one window is dropped. Validation is dropped (everything
    trains) when it cannot hold one window or would leave training without one.
    """
    seq_len = config.window.seq_len
    total = sum(b - a for a, b in segments)
    held_out = int(round(total * config.training.val_fraction))
    blocks = max(1, min(VALIDATION_BLOCKS, held_out // (2 * seq_len)))
    # Validation spans as positions in the concatenated segments: block k ends span k.
    ends = [round(total * (k + 1) / blocks) for k in range(blocks)]
    sizes = [round(held_out * (k + 1) / blocks) - round(held_out * k / blocks) for k in range(blocks)]
    held = [(end - size, end) for end, size in zip(ends, sizes, strict=True)]
    train: list[tuple[int, int]] = []
    val: list[tuple[int, int]] = []
    offset = 0
    for a, b in segments:
        cursor = a
        for low, high in held:
            low, high = max(a, a + low - offset), min(b, a + high - offset)
            if low >= high:
                continue
            train.append((cursor, low))
            val.append((low, high))
            cursor = high
        train.append((cursor, b))
        offset += b - a
    train = [(a, b) for a, b in train if b - a >= seq_len]
    val = [(a, b) for a, b in val if b - a >= seq_len]
    if not train or not val or config.training.val_fraction == 0:
        return segments, []
    return train, val


def _fit_trend(
    model: TemporalGRUGenerator,
    x: torch.Tensor,
    tokens: torch.Tensor,
    calendar: torch.Tensor,
    segments: list[tuple[int, int]],
    config: TSSynthConfig,
    device: torch.device,
    generator: torch.Generator,
    report: ProgressCallback,
    stop: Callable[[], bool],
) -> list[float]:
    """Teacher forcing: every step of a (context + window) span predicts the next step's continuous values
    (squared error) and, with a state head, its discrete states (cross-entropy, averaged over features)."""
    # Context + window, shortened to the shortest segment so that every segment contributes.
    length = min(config.trend.context_len + config.window.seq_len, min(b - a for a, b in segments))
    starts = window_starts(segments, length, config.window.stride)
    pairs = torch.cat([torch.arange(a, b - 1) for a, b in segments])
    model.start_from_counts(tokens[pairs], tokens[pairs + 1])
    model.to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.trend.lr, weight_decay=config.training.weight_decay)
    batch_size = config.training.batch_size
    per_epoch = max(1, -(-len(starts) // batch_size))
    total = config.trend.epochs * per_epoch
    clock, losses = time.monotonic(), []
    for epoch in range(config.trend.epochs):
        order = torch.randperm(len(starts), generator=generator)
        epoch_loss = 0.0
        for i in range(per_epoch):
            if stop():
                raise TrainingCancelled("training cancelled")
            rows = torch.as_tensor(starts)[order[i * batch_size : (i + 1) * batch_size]][:, None] + torch.arange(length)
            series, states = x[rows].to(device), tokens[rows].to(device)
            inputs = series[:, :-1]
            if epoch >= SWAP_FROM_EPOCH and config.trend.swap_innovations > 0:
                inputs = swapped_innovations(
                    model, series, states, calendar[rows[:, :-1]], config.trend.swap_innovations,
                    config.trend.context_len // 2, generator,
                )
            predictions, logits, _ = model(
                inputs, states[:, :-1], calendar=calendar[rows[:, :-1]], next_tokens=states[:, 1:]
            )
            loss = torch.mean((predictions - series[:, 1:]) ** 2) + model.state_loss(logits, states[:, 1:])
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.training.grad_clip)
            optimiser.step()
            epoch_loss += float(loss.detach())
            done = epoch * per_epoch + i + 1
            report(Progress("trend", done, total, float(loss.detach()), _eta(clock, done, total)))
        losses.append(round(epoch_loss / per_epoch, 6))
    model.eval()
    return losses


@torch.no_grad()
def swapped_innovations(
    model: TemporalGRUGenerator,
    series: torch.Tensor,
    states: torch.Tensor,
    calendar: torch.Tensor,
    share: float,
    keep: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The rows [B, L - 1, D] stage 1 reads to predict ``series[:, 1:]`` [B, L, D]: the real rows, except that
    about ``share`` of those after row ``keep`` are the model's own prediction of the row plus the
    innovation (teacher-forced residual) of a random row of the batch. Rows 0 .. ``keep`` stay real, so each
    span starts from a real history, as a rollout does.

    Why: a rollout feeds stage 1 rows made of its predictions and innovations drawn from other rows,
    which no real history contains: an innovation that moves a tank without its flows. Trained only
    on real rows, stage 1 never saw such a row; trained to predict the real next step from
    rows like it, it learns what of an innovation to keep. BATADAL's discriminative score fell from
    0.169 / 0.172 to 0.133 / 0.115 on two seeds (docs/DECISIONS.md).
    """
    inputs = series[:, :-1]
    predictions, _, _ = model(inputs, states[:, :-1], calendar=calendar, next_tokens=states[:, 1:])
    residuals = series[:, 1:] - predictions  # residuals of rows 1 .. L-1
    batch, steps, width = residuals.shape
    flat = residuals.reshape(-1, width)
    others = flat[torch.randint(0, len(flat), (batch * steps,), generator=generator).to(flat.device)].reshape(residuals.shape)
    swap = torch.rand(batch, steps, 1, generator=generator).to(flat.device) < share
    swap[:, :keep] = False  # rows 1 .. keep (and row 0) stay real
    rows = torch.where(swap, predictions + others, series[:, 1:])
    return torch.cat([series[:, :1], rows[:, :-1]], dim=1)


def _window_trends(
    model: TemporalGRUGenerator | None,
    x: torch.Tensor,
    tokens: torch.Tensor,
    calendar: torch.Tensor,
    segments: list[tuple[int, int]],
    series_segments: list[tuple[int, int]],
    config: TSSynthConfig,
    device: torch.device,
) -> tuple[torch.Tensor, np.ndarray]:
    """Trend [W, L + 1, Dc] of every window in ``segments`` (see ``window_trend``; zeros without a trend
    model) and the windows' start rows.

    A context reads the C rows before its window within the window's segment of the series
    (``series_segments``), validation rows included: they are read, never predicted. A window with fewer
    than C earlier rows gets its context padded with the segment's first row (a steady state), so no
    window is lost.
    """
    seq_len, context_len = config.window.seq_len, config.trend.context_len
    starts = window_starts(segments, seq_len, config.window.stride)
    if model is None or not len(starts):
        return torch.zeros(len(starts), seq_len + 1, x.shape[1]), starts
    segment_start = np.zeros(len(starts), dtype=np.int64)
    for a, b in series_segments:
        segment_start[(starts >= a) & (starts < b)] = a
    offsets = torch.arange(-context_len, seq_len)
    rows = torch.as_tensor(starts)[:, None] + offsets
    rows = torch.maximum(rows, torch.as_tensor(segment_start)[:, None])
    trends = []
    with torch.no_grad():
        for chunk in torch.split(rows, 4096):
            series, states = x[chunk].to(device), tokens[chunk].to(device)
            trend = model.window_trend(
                series[:, :context_len],
                series[:, context_len:],
                states[:, :context_len],
                states[:, context_len:],
                calendar[chunk],
            )
            trends.append(trend.cpu())
    return torch.cat(trends), starts


def _window_residuals(x: torch.Tensor, trend: torch.Tensor, starts: np.ndarray, seq_len: int) -> torch.Tensor:
    """Residual ``x_t - trend_t`` [W, L, Dc] of every window, in model units (before standardising)."""
    return x[_window_rows(starts, seq_len)] - trend[:, :seq_len]


def _window_rows(starts: np.ndarray, length: int) -> torch.Tensor:
    """Series rows [W, length] of the windows starting at ``starts``."""
    return torch.as_tensor(starts)[:, None] + torch.arange(length)


def _one_occurrence_per_row(starts: np.ndarray, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """Indices into the flattened [W * L] window rows naming each series row once, in random order.

    Overlapping windows hold a row up to L times (its trend differs a little with the history the window
    gives it). Sampling the pool from the flattened windows repeated some rows and, at 4096 of BATADAL's
    about 190,000 window rows, left out others by chance: a pump that ran 4 hours in the year was in one pool
    and not in the next, and its switching with it. One occurrence of every row (a random one) keeps the
    bootstrap faithful to the data's own frequencies; the cap then takes a random subset.
    """
    rows = _window_rows(starts, seq_len).reshape(-1)
    order = torch.randperm(len(rows), generator=generator)
    _, first = np.unique(rows[order].numpy(), return_index=True)
    once = order[torch.as_tensor(first)]
    return once[torch.randperm(len(once), generator=generator)]


def _sample_context_rows(segments: list[tuple[int, int]], context_len: int, generator: torch.Generator) -> torch.Tensor:
    """Rows [N, C] of real context spans for rollouts, each inside one segment."""
    starts = window_starts(segments, context_len, 1)
    picks = torch.randperm(len(starts), generator=generator)[:MAX_CONTEXTS]
    return _window_rows(starts[picks.numpy()], context_len)


def _diffusion_windows(
    residual: torch.Tensor,
    discrete: np.ndarray,
    trend: torch.Tensor,
    starts: np.ndarray,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> dict[str, torch.Tensor]:
    rows = _window_rows(starts, residual.shape[1])
    return {
        "residual": (residual - mean) / std,
        "trend": trend,
        "tokens": torch.as_tensor(discrete)[rows],
    }


def _fit_denoiser(
    denoiser: torch.nn.Module,
    ema: torch.nn.Module,
    train_set: dict[str, torch.Tensor],
    val_set: dict[str, torch.Tensor] | None,
    n_categories: list[int],
    config: TSSynthConfig,
    device: torch.device,
    generator: torch.Generator,
    report: ProgressCallback,
    stop: Callable[[], bool],
    deadline: float | None,
) -> dict[str, Any]:
    """Train the denoiser for ``max_steps``, fewer if validation stops improving or ``deadline`` (a
    ``time.monotonic()`` value) would be passed; the EMA weights of the best validation are kept."""
    cfg = config.training
    schedule = NoiseSchedule.make(config.diffusion.timesteps, config.diffusion.noise_schedule)
    mask_ids = torch.tensor(n_categories, dtype=torch.long, device=device)
    optimiser = torch.optim.AdamW(denoiser.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # The planned total can shrink under a time budget; the schedule follows it, so a shortened run
    # still ends with its learning rate annealed instead of being cut mid-schedule.
    planned = [cfg.max_steps]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: warmup_cosine(s, planned[0]))
    ema.load_state_dict(denoiser.state_dict())
    ema.requires_grad_(False)
    n_windows = len(train_set["residual"])
    best_val, best_state, best_step, bad_evals = float("inf"), copy.deepcopy(ema.state_dict()), 0, 0
    train_log, val_log = [], []
    running, since, clock, step, early_stop = 0.0, 0, time.monotonic(), 0, False
    while step < planned[0]:
        step += 1
        if stop():
            raise TrainingCancelled("training cancelled")
        denoiser.train()
        pick = torch.randint(0, n_windows, (cfg.batch_size,), generator=generator)
        batch = {k: v[pick].to(device) for k, v in train_set.items()}
        terms = diffusion_loss(denoiser, batch, schedule, mask_ids, config, generator)
        optimiser.zero_grad()
        terms.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), cfg.grad_clip)
        optimiser.step()
        scheduler.step()
        _update_ema(ema, denoiser, min(cfg.ema_decay, (1 + step) / (10 + step)))
        running, since = running + float(terms.detach()), since + 1
        if deadline is not None and (step % cfg.eval_every == 0 or time.monotonic() >= deadline):
            now = time.monotonic()
            planned[0] = steps_within_budget(step, (now - clock) / step, deadline - now, cfg.max_steps, cfg.eval_every)
        report(Progress("diffusion", step, planned[0], float(terms.detach()), _eta(clock, step, planned[0])))
        if step % cfg.eval_every == 0 or step == planned[0]:
            train_log.append(round(running / since, 6))
            running, since = 0.0, 0
            if val_set is not None:
                val_loss = validation_loss(ema, val_set, schedule, mask_ids, config, device)
                val_log.append(round(val_loss, 6))
                if val_loss < best_val:
                    best_val, best_state, best_step, bad_evals = val_loss, copy.deepcopy(ema.state_dict()), step, 0
                else:
                    bad_evals += 1
                    if cfg.patience and bad_evals >= cfg.patience:
                        early_stop = True
                        break
    if val_set is not None:
        ema.load_state_dict(best_state)
    else:
        best_step = step
    return {
        "steps": step,
        "best_step": best_step,
        "planned_steps": planned[0],
        # The plan may have dipped below max_steps and recovered as the pace changed: only the end counts.
        "stopped_by": "early_stopping" if early_stop else "time_budget" if step < cfg.max_steps else "max_steps",
        "max_minutes": cfg.max_minutes,
        "train_losses": train_log,
        "val_losses": val_log,
    }


def diffusion_loss(
    denoiser: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    schedule: NoiseSchedule,
    mask_ids: torch.Tensor,
    config: TSSynthConfig,
    generator: torch.Generator | None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted sum of the denoising, quantile, residual-stats and discrete losses on one batch."""
    residual, trend, tokens = batch["residual"], batch["trend"], batch["tokens"]
    device, weights = residual.device, config.loss
    n = residual.shape[0]
    if t is None:
        t = torch.randint(1, schedule.timesteps + 1, (n,), generator=generator).to(device)
    if noise is None:
        noise = torch.randn(residual.shape, generator=generator).to(device)
    x_t = schedule.add_noise(residual, noise, t)
    noisy_tokens, masked = mask_tokens(tokens, t.cpu(), schedule.timesteps, mask_ids.cpu(), generator)
    velocity, logits = denoiser(x_t, trend, noisy_tokens.to(device), t)
    total = residual.new_zeros(())
    if residual.shape[-1]:
        per_sample = ((velocity - schedule.velocity(residual, noise, t)) ** 2).mean(dim=(1, 2))
        total = total + (min_snr_weight(schedule, t, weights.snr_gamma).to(device) * per_sample).mean()
        clean = schedule.alpha_bar.to(device)[t] > ALIGNMENT_MIN_ALPHA_BAR
        if clean.any() and (weights.quantile_weight or weights.residual_stats_weight):
            x0_pred, _ = schedule.split_velocity(x_t[clean], velocity[clean], t[clean])
            if weights.quantile_weight:
                total = total + weights.quantile_weight * quantile_alignment_loss(x0_pred, residual[clean])
            if weights.residual_stats_weight:
                total = total + weights.residual_stats_weight * residual_stats_loss(x0_pred, residual[clean])
    if logits and weights.discrete_weight:
        total = total + weights.discrete_weight * discrete_loss(logits, tokens, masked.to(device))
    return total


def validation_loss(
    model: torch.nn.Module,
    val_set: dict[str, torch.Tensor],
    schedule: NoiseSchedule,
    mask_ids: torch.Tensor,
    config: TSSynthConfig,
    device: torch.device,
) -> float:
    """The training objective on held-out windows at fixed times and fixed noise (comparable over time)."""
    generator = torch.Generator().manual_seed(12345)
    model.eval()
    n = min(len(val_set["residual"]), 512)
    batch = {k: v[:n].to(device) for k, v in val_set.items()}
    losses = []
    with torch.no_grad():
        for t_value in torch.linspace(1, schedule.timesteps, 8).round().long().tolist():
            t = torch.full((n,), t_value, device=device)
            noise = torch.randn(batch["residual"].shape, generator=generator).to(device)
            losses.append(float(diffusion_loss(model, batch, schedule, mask_ids, config, generator, t, noise)))
    return float(np.mean(losses))


def steps_within_budget(
    step: int, seconds_per_step: float, seconds_left: float, max_steps: int, min_steps: int
) -> int:
    """Denoiser steps in total that fit the time left: those done plus what the measured pace allows.

    Never fewer than ``min_steps`` (a budget spent before the denoiser starts still yields a model that
    has seen some training, and the overrun is one validation interval) nor more than ``max_steps``.
    """
    fits = step + int(max(0.0, seconds_left) / max(seconds_per_step, 1e-9))
    return max(min(max_steps, min_steps), min(max_steps, fits))


def warmup_cosine(step: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over the first 5 % of steps, then cosine decay to 10 %."""
    warmup = max(1, total // 20)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for target, source in zip(ema.parameters(), model.parameters(), strict=True):
        target.mul_(decay).add_(source.detach(), alpha=1 - decay)


def _validation_report(bundle: ModelBundle, table: PreparedTable, segments: list[tuple[int, int]]) -> dict[str, Any]:
    """Diagnostics of generated windows against real windows of the held-out span."""
    seq_len = bundle.config.window.seq_len
    starts = window_starts(segments, seq_len, seq_len)[:VALIDATION_SEQUENCES]
    if not len(starts):
        raise DataError("no window fits the validation span")
    rows = (starts[:, None] + np.arange(seq_len)).ravel()
    reference = table.values.iloc[rows].reset_index(drop=True)
    reference.insert(0, "sequence_id", np.repeat(np.arange(len(starts)), seq_len))
    synthetic = generate(bundle, len(starts), seed=bundle.config.training.seed)
    if bundle.schema.timestamp_column:
        synthetic = synthetic.drop(columns=[bundle.schema.timestamp_column])
    synthetic = synthetic.drop(columns=["step"])
    report = diagnose(reference, synthetic, kinds=bundle.schema.kinds)
    return report.model_dump(mode="json")


def _choose_strength(
    bundle: ModelBundle, table: PreparedTable, segments: list[tuple[int, int]], report: ProgressCallback
) -> dict[str, Any]:
    """Score windows generated at ``sampling.strength`` and at 1 against real training windows; keep the
    configured strength unless 1 scores lower by more than ``STRENGTH_CHOICE_MARGIN``.

    Why: starting the residual from the rollout (SDEdit) cut the discriminative score on BATADAL (0.32 ->
    0.22) and raised it on the demo plant (0.22 -> 0.34); the same classifier, run once, ranks the two as
    its five-run mean does (docs/DECISIONS.md). Every feature in original units, as the benchmark scores
    them: on model-space continuous features alone the classifier told neither candidate from real data.
    """
    started = time.monotonic()
    config = bundle.config
    seq_len = config.window.seq_len
    names = table.schema.names()
    starts = window_starts(segments, seq_len, 1)
    picks = np.sort(np.random.default_rng(config.training.seed).permutation(len(starts))[:STRENGTH_CHOICE_WINDOWS])
    real = table.values[names].to_numpy(dtype=float)[starts[picks][:, None] + np.arange(seq_len)]
    candidates = [config.sampling.strength, 1.0]
    gaps = []
    for done, strength in enumerate(candidates):
        report(Progress("choose_strength", done, len(candidates)))
        frame = generate(bundle.with_sampling(strength=strength), len(picks), seed=config.training.seed)
        synthetic = frame[names].to_numpy(dtype=float).reshape(len(picks), seq_len, len(names))
        with single_thread():
            scaled_real, scaled_synthetic = scale_with_real_range(real, synthetic)
            gaps.append(
                discrimination_gap(scaled_real, scaled_synthetic, STRENGTH_CHOICE_ITERATIONS, 128, config.training.seed)
            )
    report(Progress("choose_strength", len(candidates), len(candidates)))
    return {
        "candidates": candidates,
        "discrimination_gaps": [round(g, 4) for g in gaps],
        "chosen": _pick_strength(candidates[0], gaps[0], gaps[1]),
        "margin": STRENGTH_CHOICE_MARGIN,
        "windows": len(picks),
        "seconds": round(time.monotonic() - started, 1),
    }


def _pick_strength(configured: float, configured_gap: float, pure_noise_gap: float) -> float:
    """1 where it scored clearly lower than the configured strength, else the configured strength."""
    return 1.0 if pure_noise_gap < configured_gap - STRENGTH_CHOICE_MARGIN else configured


def _strength_choice_seconds(bundle: ModelBundle) -> float:
    """What ``_choose_strength`` will take, timed on a sample of its work (its pace does not depend on the
    weights): both candidates' generation on 1/8 of the windows, and 20 classifier iterations."""
    config = bundle.config
    probe_windows, probe_iterations = STRENGTH_CHOICE_WINDOWS // 8, 20
    started = time.monotonic()
    for strength in (config.sampling.strength, 1.0):
        generate(bundle.with_sampling(strength=strength), probe_windows, seed=config.training.seed)
    generation = (time.monotonic() - started) * 8
    features = sum(kind != "constant" for kind in bundle.schema.kinds.values())
    windows = np.random.default_rng(0).random((2 * probe_windows, config.window.seq_len, max(features, 1)))
    started = time.monotonic()
    with single_thread():
        discrimination_gap(windows[:probe_windows], windows[probe_windows:], probe_iterations, 128, 0)
    classifier = (time.monotonic() - started) / probe_iterations * STRENGTH_CHOICE_ITERATIONS * 2
    return generation + classifier


def _eta(clock: float, done: int, total: int) -> float:
    return round((time.monotonic() - clock) / max(done, 1) * (total - done), 1)


def _package_version() -> str:
    try:
        return version("tssynth")
    except PackageNotFoundError:
        return "unknown"
