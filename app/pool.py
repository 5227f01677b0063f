"""The bounded pool that runs model work (generation, diagnostics) off the event loop.

At most ``workers`` computations run at once; further requests wait for a slot instead of piling
threads onto two cores. The event loop itself never computes, so ``/healthz`` answers while every
slot is busy. torch releases the GIL inside its kernels, so the threads really run in parallel.

Intra-op threads: the cores minus one (left to the event loop and to a training process), shared
equally among the workers. Oversubscription is not a mild cost here: torch's worker threads
spin while they wait, and on two busy cores a tiny model trained 20x slower with two threads than
with one (measured while writing this). So on two cores every computation gets exactly one thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
import torch

T = TypeVar("T")


class WorkerPool:
    def __init__(self, workers: int):
        self.limiter = anyio.CapacityLimiter(workers)
        torch.set_num_threads(max(1, ((os.cpu_count() or 1) - 1) // workers))

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self.limiter)
