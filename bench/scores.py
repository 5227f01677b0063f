"""The TimeGAN discriminative and predictive scores, as TimeGAN (Yoon et al., 2019) and Diffusion-TS
(Yuan & Qiao, 2024) define them, so our numbers sit on the same scale as the published tables.

* Discriminative: a post-hoc 1-layer GRU classifier (hidden size max(D/2, 1), last hidden state ->
  one logit) learns real vs synthetic windows on 80 % of each side; the score is |test accuracy - 0.5|
  on the other 20 % (0 = indistinguishable, 0.5 = trivially separable).
* Predictive (train on synthetic, test on real): a 1-layer GRU reads features[:-1] at steps 0..L-2 and
  predicts the last feature at steps 1..L-1 through a sigmoid; trained on synthetic windows, its mean
  absolute error is measured on real ones.

Both sides are min-max scaled with the *real* per-feature range. Columns constant in the real data are
dropped first: they carry no information and make the min-max range 0. Each score is repeated with
fresh networks and splits, and reported as mean and standard deviation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ScoreSettings:
    """Defaults are the published protocol (TimeGAN's metrics code, reused verbatim by Diffusion-TS)."""

    disc_iterations: int = 2000
    pred_iterations: int = 5000
    batch_size: int = 128
    runs: int = 5
    seed: int = 0


def scale_with_real_range(real: np.ndarray, synthetic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop real-constant columns, then map both sides with the real per-feature [min, max] to [0, 1]."""
    low, high = real.min(axis=(0, 1)), real.max(axis=(0, 1))
    keep = high > low
    span = (high - low)[keep]
    return (real[..., keep] - low[keep]) / span, (synthetic[..., keep] - low[keep]) / span


class _GRUHead(nn.Module):
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
def _single_thread() -> Iterator[None]:
    """Run the score networks on one intra-op thread.

    They are tiny (hidden size <= D/2), so a second thread only adds synchronisation; on a 2-core
    machine shared with other work, measured here, 2 threads made each iteration 4-20x slower than 1.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def discriminative_score(real: np.ndarray, synthetic: np.ndarray, settings: ScoreSettings) -> dict[str, Any]:
    """|accuracy - 0.5| of a post-hoc real/synthetic classifier; see the module docstring."""
    real, synthetic = scale_with_real_range(real, synthetic)
    if real.shape[-1] == 0:
        return _summarise([])
    with _single_thread():
        return _summarise(
            [_discriminate_once(real, synthetic, settings, run) for run in range(settings.runs)]
        )


def _discriminate_once(real: np.ndarray, synthetic: np.ndarray, settings: ScoreSettings, run: int) -> float:
    rng = np.random.default_rng(settings.seed + run)
    torch.manual_seed(settings.seed + run)
    # Equal counts per side, so chance accuracy is exactly 0.5 whatever the two set sizes are.
    n = min(len(real), len(synthetic))
    real_train, real_test = _split(real[rng.permutation(len(real))[:n]], rng)
    syn_train, syn_test = _split(synthetic[rng.permutation(len(synthetic))[:n]], rng)
    model = _GRUHead(real.shape[-1], max(real.shape[-1] // 2, 1), every_step=False)
    optimiser = torch.optim.Adam(model.parameters())
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(settings.disc_iterations):
        batch_real = _batch(real_train, settings.batch_size, rng)
        batch_syn = _batch(syn_train, settings.batch_size, rng)
        loss = loss_fn(model(batch_real).squeeze(-1), torch.ones(len(batch_real))) + loss_fn(
            model(batch_syn).squeeze(-1), torch.zeros(len(batch_syn))
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        correct_real = (model(_tensor(real_test)).squeeze(-1) > 0).sum().item()
        correct_syn = (model(_tensor(syn_test)).squeeze(-1) <= 0).sum().item()
    accuracy = (correct_real + correct_syn) / (len(real_test) + len(syn_test))
    return abs(accuracy - 0.5)


def predictive_score(real: np.ndarray, synthetic: np.ndarray, settings: ScoreSettings) -> dict[str, Any]:
    """MAE on real windows of a next-step predictor of the last feature trained on synthetic windows."""
    real, synthetic = scale_with_real_range(real, synthetic)
    if real.shape[-1] < 2:  # nothing left to predict the last feature from
        return _summarise([])
    with _single_thread():
        return _summarise([_predict_once(real, synthetic, settings, run) for run in range(settings.runs)])


def _predict_once(real: np.ndarray, synthetic: np.ndarray, settings: ScoreSettings, run: int) -> float:
    rng = np.random.default_rng(settings.seed + run)
    torch.manual_seed(settings.seed + run)
    n_features = real.shape[-1]
    train_x, train_y = synthetic[:, :-1, :-1], synthetic[:, 1:, -1:]
    model = _GRUHead(n_features - 1, max(n_features // 2, 1), every_step=True)
    optimiser = torch.optim.Adam(model.parameters())
    for _ in range(settings.pred_iterations):
        rows = rng.permutation(len(train_x))[: settings.batch_size]
        prediction = torch.sigmoid(model(_tensor(train_x[rows])))
        loss = torch.mean(torch.abs(prediction - _tensor(train_y[rows])))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        prediction = torch.sigmoid(model(_tensor(real[:, :-1, :-1])))
        return torch.mean(torch.abs(prediction - _tensor(real[:, 1:, -1:]))).item()


def _split(windows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """80/20 train/test split of one side, by a fresh permutation (TimeGAN's train_test_divide)."""
    order = rng.permutation(len(windows))
    cut = int(len(windows) * 0.8)
    return windows[order[:cut]], windows[order[cut:]]


def _batch(windows: np.ndarray, size: int, rng: np.random.Generator) -> torch.Tensor:
    return _tensor(windows[rng.permutation(len(windows))[:size]])


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)


def _summarise(scores: list[float]) -> dict[str, Any]:
    """Mean and (population) std over runs; None when the score is undefined for this data."""
    if not scores:
        return {"mean": None, "std": None, "runs": []}
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "runs": [float(s) for s in scores]}
