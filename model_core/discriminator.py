"""A post-hoc real-vs-synthetic window classifier: the discriminative score of TimeGAN (Yoon et al., 2019).

Training runs it to choose ``sampling.strength`` (``training.choose_strength``); ``bench/scores.py`` repeats
it for the published score. A 1-layer GRU (hidden size max(D/2, 1), last hidden state -> one logit) learns
real vs synthetic windows on 80 % of each side; the gap is |test accuracy - 0.5| on the other 20 % (0 =
indistinguishable, 0.5 = trivially separable). Both sides are min-max scaled with the *real* per-feature
range, after dropping the columns constant in the real data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


def scale_with_real_range(real: np.ndarray, synthetic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop real-constant columns, then map both sides with the real per-feature [min, max] to [0, 1]."""
    low, high = real.min(axis=(0, 1)), real.max(axis=(0, 1))
    keep = high > low
    span = (high - low)[keep]
    return (real[..., keep] - low[keep]) / span, (synthetic[..., keep] - low[keep]) / span


class GRUHead(nn.Module):
    """GRU followed by a linear read-out, on the last hidden state or on every step."""

    def __init__(self, n_inputs: int, hidden: int, every_step: bool):
        super().__init__()
        self.gru = nn.GRU(n_inputs, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)
        self.every_step = every_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, last = self.gru(x)
        return self.out(outputs if self.every_step else last[-1])


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the classifier on one intra-op thread.

    It is tiny (hidden size <= D/2), so a second thread only adds synchronisation; on a 2-core machine
    shared with other work, measured here, 2 threads made each iteration 4-20x slower than 1.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def discrimination_gap(
    real: np.ndarray,
    synthetic: np.ndarray,
    iterations: int,
    batch_size: int,
    seed: int,
    real_stretches: np.ndarray | None = None,
    synthetic_stretches: np.ndarray | None = None,
) -> float:
    """|accuracy - 0.5| of one classifier on already scaled windows [n, L, D] (see the module docstring).

    Without stretches each side is split at random (the published protocol). ``real_stretches`` /
    ``synthetic_stretches`` [n] label a side's windows with the stretch of the series each lies in
    (``-1``: across two stretches, left out); such a side is split by stretch instead, so none of its test
    windows shares a row with its training windows. Stride-1 windows one step apart share all but one
    row, and a classifier that has learnt the real training windows passes a randomly split real test
    window by recognising its neighbours: a generator whose windows are new to the data then scores
    worse than one that replays it. Each side's test stretches are a fifth of its own stretches.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    real_train, real_test, syn_train, syn_test = split_sides(
        real, synthetic, rng, real_stretches, synthetic_stretches
    )
    model = GRUHead(real.shape[-1], max(real.shape[-1] // 2, 1), every_step=False)
    optimiser = torch.optim.Adam(model.parameters())
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(iterations):
        batch_real = _batch(real_train, batch_size, rng)
        batch_syn = _batch(syn_train, batch_size, rng)
        loss = loss_fn(model(batch_real).squeeze(-1), torch.ones(len(batch_real))) + loss_fn(
            model(batch_syn).squeeze(-1), torch.zeros(len(batch_syn))
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        correct_real = (model(as_tensor(real_test)).squeeze(-1) > 0).sum().item()
        correct_syn = (model(as_tensor(syn_test)).squeeze(-1) <= 0).sum().item()
    accuracy = (correct_real + correct_syn) / (len(real_test) + len(syn_test))
    return abs(accuracy - 0.5)


def split_sides(
    real: np.ndarray,
    synthetic: np.ndarray,
    rng: np.random.Generator,
    real_stretches: np.ndarray | None,
    synthetic_stretches: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(real train, real test, synthetic train, synthetic test), with equal counts per side, so chance
    accuracy is exactly 0.5 whatever the two set sizes are."""
    if real_stretches is None and synthetic_stretches is None:
        n = min(len(real), len(synthetic))
        real_train, real_test = split_train_test(real[rng.permutation(len(real))[:n]], rng)
        syn_train, syn_test = split_train_test(synthetic[rng.permutation(len(synthetic))[:n]], rng)
        return real_train, real_test, syn_train, syn_test
    real_train, real_test = _split(real, real_stretches, rng)
    syn_train, syn_test = _split(synthetic, synthetic_stretches, rng)
    n_train, n_test = min(len(real_train), len(syn_train)), min(len(real_test), len(syn_test))
    if n_train == 0 or n_test == 0:
        raise ValueError("a side has no windows in the training or the test stretches")
    return real_train[:n_train], real_test[:n_test], syn_train[:n_train], syn_test[:n_test]


def _split(
    windows: np.ndarray, stretches: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """80/20 split of one side: at random, or by stretch when it has stretches."""
    if stretches is None:
        return split_train_test(windows, rng)
    labels = np.unique(stretches[stretches >= 0])
    if len(labels) < 2:
        raise ValueError("splitting by stretch needs windows from at least two stretches")
    test = np.isin(stretches, rng.choice(labels, max(1, round(0.2 * len(labels))), replace=False))
    train = (stretches >= 0) & ~test
    return windows[rng.permutation(np.flatnonzero(train))], windows[rng.permutation(np.flatnonzero(test))]


def split_train_test(windows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """80/20 train/test split of one side, by a fresh permutation (TimeGAN's train_test_divide)."""
    order = rng.permutation(len(windows))
    cut = int(len(windows) * 0.8)
    return windows[order[:cut]], windows[order[cut:]]


def _batch(windows: np.ndarray, size: int, rng: np.random.Generator) -> torch.Tensor:
    return as_tensor(windows[rng.permutation(len(windows))[:size]])


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)
