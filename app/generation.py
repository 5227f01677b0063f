"""Generation requests: limits, defaults, the two JSON layouts and the streamed CSV export.

Every check that can fail happens before any response byte is sent: once a streamed export has
started, an error can no longer become a proper status code. That is also why the export computes
its first chunk before the response starts.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pandas as pd

from app.errors import ApiError, limit_exceeded
from app.pool import WorkerPool
from app.schemas import GenerateResponse, Layout, Sampler
from app.settings import Settings
from model_core.bundle import ModelBundle
from model_core.generate import iter_generate

#: Rows per generated chunk: bounds the memory of one chunk whatever the sequence length. The engine
#: seeds each chunk separately, so JSON and CSV use the same chunking: same seed, same numbers.
EXPORT_CHUNK_ROWS = 50_000


@dataclass(frozen=True)
class GenerationPlan:
    """A validated request with every default resolved (what the response reports back)."""

    n_sequences: int
    seq_len: int
    seed: int
    sampler: Sampler
    steps: int | None

    @property
    def rows(self) -> int:
        return self.n_sequences * self.seq_len


def plan(
    bundle: ModelBundle,
    settings: Settings,
    n_sequences: int,
    seq_len: int | None,
    seed: int | None,
    sampler: Sampler | None,
    steps: int | None,
    max_sequences: int | None,
) -> GenerationPlan:
    """Resolve defaults and enforce limits; ``max_sequences`` None means only the row limit applies."""
    config = bundle.config
    if max_sequences is not None and n_sequences > max_sequences:
        raise limit_exceeded("max_sequences", n_sequences, max_sequences)
    chosen: Sampler = sampler or config.sampling.sampler
    if chosen == "ddpm" and steps is not None:
        raise ApiError(
            422, "validation_error", f"steps applies to the ddim sampler only; ddpm runs all {config.diffusion.timesteps}"
        )
    if steps is not None and steps > config.diffusion.timesteps:
        raise ApiError(
            422,
            "validation_error",
            f"steps ({steps}) exceeds the model's diffusion.timesteps ({config.diffusion.timesteps})",
        )
    result = GenerationPlan(
        n_sequences=n_sequences,
        seq_len=seq_len or config.window.seq_len,
        seed=seed if seed is not None else secrets.randbelow(2**31),
        sampler=chosen,
        steps=(steps or config.sampling.steps) if chosen == "ddim" else None,
    )
    if result.rows > settings.max_export_rows:
        raise limit_exceeded("max_export_rows", result.rows, settings.max_export_rows)
    return result


def generate_frame(bundle: ModelBundle, p: GenerationPlan) -> pd.DataFrame:
    return pd.concat(list(_chunks(bundle, p)), ignore_index=True)


def _chunks(bundle: ModelBundle, p: GenerationPlan) -> Iterator[pd.DataFrame]:
    chunk_sequences = max(1, min(bundle.config.sampling.chunk_size, EXPORT_CHUNK_ROWS // p.seq_len))
    return iter_generate(
        bundle, p.n_sequences, seq_len=p.seq_len, seed=p.seed, sampler=p.sampler, steps=p.steps,
        chunk_sequences=chunk_sequences,
    )


def response(
    name: str, version: int, bundle: ModelBundle, p: GenerationPlan, frame: pd.DataFrame, layout: Layout
) -> GenerateResponse:
    features = bundle.schema.names()
    timestamp = bundle.schema.timestamp_column
    timestamps = None
    if layout == "records":
        data: list = frame.to_dict(orient="records")
    else:
        columns = [frame[name].tolist() for name in features]
        rows = list(zip(*columns, strict=True))
        data = [[list(row) for row in rows[s * p.seq_len : (s + 1) * p.seq_len]] for s in range(p.n_sequences)]
        if timestamp is not None and timestamp in frame.columns:
            stamps = frame[timestamp].tolist()
            timestamps = [stamps[s * p.seq_len : (s + 1) * p.seq_len] for s in range(p.n_sequences)]
    return GenerateResponse(
        model=name,
        version=version,
        seed=p.seed,
        n_sequences=p.n_sequences,
        seq_len=p.seq_len,
        sampler=p.sampler,
        steps=p.steps,
        layout=layout,
        features=features,
        timestamps=timestamps,
        data=data,
    )


async def csv_export(
    pool: WorkerPool, bundle: ModelBundle, p: GenerationPlan, on_rows: Callable[[int], None]
) -> AsyncIterator[bytes]:
    """The long-format CSV (header once, then chunk after chunk), each chunk computed in the pool.

    Returns an iterator whose first chunk is already computed, so an engine error surfaces as a
    response status rather than as a truncated download.
    """
    chunks = _chunks(bundle, p)
    first = await pool.run(_next_csv, chunks, True)

    async def stream() -> AsyncIterator[bytes]:
        part = first
        while part is not None:
            text, rows = part
            on_rows(rows)
            yield text
            part = await pool.run(_next_csv, chunks, False)

    return stream()


def _next_csv(chunks: Iterator[pd.DataFrame], header: bool) -> tuple[bytes, int] | None:
    chunk = next(chunks, None)
    if chunk is None:
        return None
    return chunk.to_csv(index=False, header=header, lineterminator="\n").encode(), len(chunk)
