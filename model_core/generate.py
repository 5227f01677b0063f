""""Give me N sequences": the one generation function behind the CLI, the service and the benchmarks.

Pipeline per chunk of sequences (bounded memory: only ``chunk_sequences`` sequences are in flight):

1. stage 1 rolls out a trend of the requested length from contexts drawn from the training data, and
   samples the discrete states along it (``trend.discrete_states``);
2. stage 2 samples the normalised residual window by window, given the states (or, without stage-1
   states, jointly with them);
3. ``continuous = trend + residual * std + mean`` (exactly how ``train`` split them), then the inverse
   transforms give original units and formats, and exact couplings seen in the data (a pump's state
   and its zero flow; a pressure's range per pump state) are enforced, the sampled state leading (see
   couplings.py). With ``sampling.follow_couplings`` the rollout already stays inside them (step 1,
   ``InnovationPool``) and a value the denoiser moves out keeps the rollout's value, in model space, so
   that enforcement finds nothing to move.

Sequences longer than the training window are produced by chaining windows: each next window overlaps
the previous one by half a window, and the overlap is held to the already generated values during the
whole reverse process (replacement inpainting), so each window continues the one before. The trend is
one continuous rollout over the whole length, so it has no seams at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch

from model_core.bundle import ModelBundle, trend_calendar_periods
from model_core.calendar import calendar_features
from model_core.couplings import apply_couplings
from model_core.diffusion import NoiseSchedule, unmask_step
from model_core.samplers import make_sampler
from model_core.trend import InnovationPool


def generate(
    bundle: ModelBundle,
    n_sequences: int,
    seq_len: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
) -> pd.DataFrame:
    """All sequences as one long-format table (see ``iter_generate``)."""
    chunks = list(iter_generate(bundle, n_sequences, seq_len, seed, sampler, steps))
    return pd.concat(chunks, ignore_index=True)


def iter_generate(
    bundle: ModelBundle,
    n_sequences: int,
    seq_len: int | None = None,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    chunk_sequences: int | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield long-format tables of at most ``chunk_sequences`` sequences each.

    Columns: ``sequence_id`` (global, from 0), ``step``, a synthetic ``timestamp`` if the training data
    had one, then every feature in the original order and format. The same arguments and model give the
    same output on the same machine.
    """
    if n_sequences < 1:
        raise ValueError("n_sequences must be at least 1")
    length = seq_len or bundle.config.window.seq_len
    if length < 1:
        raise ValueError("seq_len must be at least 1")
    chunk = chunk_sequences or bundle.config.sampling.chunk_size
    for index, start in enumerate(range(0, n_sequences, chunk)):
        count = min(chunk, n_sequences - start)
        generator = torch.Generator().manual_seed(_chunk_seed(seed, index))
        continuous, discrete, first_seconds = sample_model_space(bundle, count, length, generator, sampler, steps)
        table = bundle.transforms.inverse(
            continuous.reshape(count * length, -1), discrete.reshape(count * length, -1), rounded=True
        )
        coupling_rng = np.random.default_rng(_chunk_seed(seed, index))
        table = apply_couplings(
            table, bundle.schema.couplings, length, coupling_rng, bundle.schema.range_couplings
        )
        yield _long_format(bundle, table, start, count, length, first_seconds)


def sample_model_space(
    bundle: ModelBundle,
    n: int,
    length: int,
    generator: torch.Generator,
    sampler: str | None = None,
    steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``n`` sequences in model space: continuous [n, length, Dc], discrete indices [n, length, Dd] and the
    wall-clock epoch seconds [n] of each sequence's first step when stage 1 reads a calendar (else None:
    the sequences have no place in the day)."""
    config = bundle.config
    window = config.window.seq_len
    total = max(length, window)
    device = bundle.device
    pools = bundle.pools
    n_continuous = len(bundle.transforms.continuous)
    states: torch.Tensor | None = None
    first_seconds: np.ndarray | None = None
    mean = torch.as_tensor(pools.residual_mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(pools.residual_std, dtype=torch.float32, device=device)
    rollout_residual: torch.Tensor | None = None
    innovations: InnovationPool | None = None
    with torch.inference_mode():
        if bundle.trend is not None:
            picks = torch.randint(0, len(pools.contexts), (n,), generator=generator).numpy()
            context = torch.as_tensor(pools.contexts[picks], dtype=torch.float32, device=device)
            context_tokens = torch.as_tensor(pools.context_tokens[picks], device=device)
            innovations = innovation_pool(bundle)
            calendar = rollout_calendar(bundle, pools.context_times[picks], total)
            context_rows = None
            if innovations.rows is not None and pools.context_rows is not None:
                context_rows = torch.as_tensor(pools.context_rows[picks], device=device)
            trend, path, rollout_states = bundle.trend.rollout(
                context, context_tokens, total, innovations, generator, calendar.to(device), context_rows
            )
            if config.sampling.strength < 1.0:
                rollout_residual = ((path - trend[:, :total] - mean) / std).cpu()
            if bundle.trend.n_categories:
                states = rollout_states.cpu()
            if bundle.trend.n_calendar:
                first_seconds = pools.context_times[picks, -1] + (bundle.schema.step_seconds or 0.0)
        else:
            trend = torch.zeros(n, total + 1, n_continuous, device=device)
        residual, tokens = _sample_residuals(bundle, trend, generator, sampler, steps, states, rollout_residual)
    continuous = trend[:, :total] + residual * std + mean
    if innovations is not None and innovations.state_bounds is not None and states is not None:
        # The path respects the couplings by construction; where the denoiser moved a value out of what
        # its states allow, the path's value at that step stands (a repair in model space, one step
        # long, instead of the output repair's copy of another step's value).
        low, high = innovations.allowed(tokens.to(device))
        outside = (continuous < low) | (continuous > high)
        continuous = torch.where(outside, path, continuous)
    return continuous[:, :length].cpu().double().numpy(), tokens[:, :length].cpu().numpy(), first_seconds


def rollout_calendar(bundle: ModelBundle, context_times: np.ndarray, length: int) -> torch.Tensor:
    """Calendar features [n, C + length, n_calendar] of rollout contexts' rows (``context_times`` [n, C]) and
    of the ``length`` steps after each, one median step apart (a segment has no gaps)."""
    step = bundle.schema.step_seconds or 0.0
    ahead = context_times[:, -1:] + step * np.arange(1, length + 1)
    times = np.concatenate([context_times, ahead], axis=1)
    return torch.as_tensor(calendar_features(times, trend_calendar_periods(bundle.config, bundle.schema)))


def _sample_residuals(
    bundle: ModelBundle,
    trend: torch.Tensor,
    generator: torch.Generator,
    sampler: str | None,
    steps: int | None,
    states: torch.Tensor | None,
    rollout_residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals [n, total, Dc] and discrete states [n, total, Dd], window by window.

    ``states`` given (sampled by stage 1) are held fixed like an inpainted part: the denoiser samples the
    continuous residual given them. Otherwise the diffusion samples the states too. ``rollout_residual``
    [n, total, Dc] (the rollout path's own residual, standardised) is where each window's reverse diffusion
    starts when ``sampling.strength`` < 1.
    """
    config = bundle.config
    window = config.window.seq_len
    n, total, n_continuous = trend.shape[0], trend.shape[1] - 1, trend.shape[2]
    overlap = window // 2
    mask_ids = torch.tensor(bundle.transforms.n_categories, dtype=torch.long)
    residual = torch.zeros(n, total, n_continuous)
    tokens = states[:, :total].clone() if states is not None else torch.zeros(n, total, len(mask_ids), dtype=torch.long)
    start, known = 0, 0
    while True:
        start = min(start, total - window)
        r, tok = _sample_window(
            bundle,
            trend[:, start : start + window + 1],
            residual[:, start : start + known],
            tokens[:, start : start + (window if states is not None else known)],
            mask_ids,
            generator,
            sampler,
            steps,
            None if rollout_residual is None else rollout_residual[:, start : start + window],
        )
        residual[:, start : start + window], tokens[:, start : start + window] = r.cpu(), tok.cpu()
        if start + window >= total:
            return residual.to(trend.device), tokens
        start, known = start + window - overlap, overlap


def _sample_window(
    bundle: ModelBundle,
    trend: torch.Tensor,
    known_residual: torch.Tensor,
    known_tokens: torch.Tensor,
    mask_ids: torch.Tensor,
    generator: torch.Generator,
    sampler_name: str | None,
    steps: int | None,
    begin: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse diffusion of one window, with its first ``known`` steps held to given values (and the first
    ``known_tokens.shape[1]`` steps of its states, which may be the whole window).

    With ``begin`` [n, window, Dc] the diffusion starts from it, noised to ``sampling.strength`` of the
    schedule, and runs the sampler's steps below that level only (SDEdit, Meng et al. 2022). Why: the
    rollout path keeps each tank's step in line with the pump states it was drawn in; sampled from pure
    noise, the residual redraws that step and doubled its spread (docs/DECISIONS.md).
    """
    config = bundle.config
    device = trend.device
    n, window, n_continuous = trend.shape[0], trend.shape[1] - 1, trend.shape[2]
    schedule = NoiseSchedule.make(config.diffusion.timesteps, config.diffusion.noise_schedule)
    name = sampler_name or config.sampling.sampler
    sampler = make_sampler(name, schedule, config.sampling.eta, clip=bundle.pools.clip)
    sampler.set_timesteps(steps or config.sampling.steps if name == "ddim" else None)
    known, known_states = known_residual.shape[1], known_tokens.shape[1]
    x = torch.randn(n, window, n_continuous, generator=generator).to(device)
    pairs = sampler.pairs()
    if begin is not None:
        pairs = sampler.pairs_below(config.sampling.strength * config.diffusion.timesteps)
        x = schedule.add_noise(begin.to(device), x, torch.full((n,), pairs[0][0]))
    tokens = mask_ids.expand(n, window, -1).clone().to(device)
    known_residual, known_tokens = known_residual.to(device), known_tokens.to(device)
    mask_ids = mask_ids.to(device)
    for t, t_prev in pairs:
        if known:
            noise = torch.randn(known_residual.shape, generator=generator).to(device)
            x[:, :known] = schedule.add_noise(known_residual, noise, torch.full((n,), t))
        tokens[:, :known_states] = known_tokens
        velocity, logits = bundle.ema(x, trend, tokens, torch.full((n,), t, device=device))
        x = sampler.step(velocity, t, t_prev, x, generator)
        tokens = unmask_step(tokens, logits, t, t_prev, mask_ids, generator)
    if known:
        x[:, :known] = known_residual
    tokens[:, :known_states] = known_tokens
    return x, tokens


def innovation_pool(bundle: ModelBundle) -> InnovationPool:
    """Stage 1's rollout noise for a bundle with a trend model: its training residuals, drawn as its config
    says (``trend.innovation_neighbours``; inside the couplings with ``sampling.follow_couplings``; off the
    real continuation with ``sampling.avoid_replay``, where the bundle records its pool's rows)."""
    assert bundle.trend is not None
    pools, device = bundle.pools, bundle.device
    bounds = bundle.state_bounds if bundle.config.sampling.follow_couplings else None
    rows = pools.residual_rows if bundle.config.sampling.avoid_replay else None
    return InnovationPool(
        torch.as_tensor(pools.residual_trends, dtype=torch.float32, device=device),
        torch.as_tensor(pools.residuals, dtype=torch.float32, device=device),
        bundle.config.trend.innovation_neighbours,
        torch.as_tensor(pools.residual_states, device=device),
        bundle.trend.n_categories,
        None if bounds is None else (torch.as_tensor(bounds[0], dtype=torch.float32, device=device), torch.as_tensor(bounds[1], dtype=torch.float32, device=device)),
        None if rows is None else torch.as_tensor(rows, device=device),
    )


def _long_format(
    bundle: ModelBundle, table: pd.DataFrame, first_id: int, count: int, length: int, first_seconds: np.ndarray | None
) -> pd.DataFrame:
    columns: dict[str, object] = {
        "sequence_id": np.repeat(np.arange(first_id, first_id + count), length),
        "step": np.tile(np.arange(length), count),
    }
    schema = bundle.schema
    if schema.timestamp_column and schema.start is not None and schema.step_seconds:
        origin = pd.Timestamp(schema.start)
        columns[schema.timestamp_column] = _timestamps(bundle, origin, count, length, first_seconds)
    out = pd.DataFrame(columns)
    return pd.concat([out, table], axis=1)


def _timestamps(
    bundle: ModelBundle, origin: pd.Timestamp, count: int, length: int, first_seconds: np.ndarray | None
) -> np.ndarray:
    """Synthetic timestamps [count * length] from ``origin``, the training data's first timestamp.

    With a calendar, each sequence starts in the data's first cycle (a week, or a day) at the phase it was
    generated at: a pump that runs from 06:00 runs from 06:00 in the output too, and no real date is
    revealed. Without one, every sequence starts at the data's first timestamp.
    """
    schema = bundle.schema
    step = float(schema.step_seconds or 0.0)
    offsets = np.zeros(count)
    if first_seconds is not None:
        cycle = max(trend_calendar_periods(bundle.config, schema))
        wall_origin = origin.tz_localize(None) if origin.tz is not None else origin
        offsets = np.mod(first_seconds - (wall_origin - pd.Timestamp(0)).total_seconds(), cycle)
    seconds = (offsets[:, None] + step * np.arange(length)).reshape(-1)
    # Few distinct instants (one per phase and step): format each once, not once per row.
    distinct, index = np.unique(seconds, return_inverse=True)
    text = (origin + pd.to_timedelta(distinct, unit="s")).strftime("%Y-%m-%d %H:%M:%S").to_numpy()
    return text[index]


def _chunk_seed(seed: int, index: int) -> int:
    """Independent, reproducible stream per (seed, chunk)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)
