"""Shared test setup.

Tiny models gain nothing from intra-op threads, and on a small shared machine OpenMP threads spin
against each other (we measured a tiny training run go from 3 s to 60 s), so tests use one thread.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
