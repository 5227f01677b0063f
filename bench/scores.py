"""The TimeGAN discriminative and predictive scores, as TimeGAN (Yoon et al., 2019) and Diffusion-TS
(Yuan & Qiao, 2024) define them, so our numbers sit on the same scale as the published tables.

* Discriminative (the classifier lives in ``model_core/discriminator.py``; training runs it too): a
  post-hoc 1-layer GRU classifier (hidden size max(D/2, 1), last hidden state -> one logit) learns real
  vs synthetic windows on 80 % of each side; the score is |test accuracy - 0.5| on the other 20 % (0 =
  indistinguishable, 0.5 = trivially separable).
* Predictive (train on synthetic, test on real): a 1-layer GRU reads features[:-1] at steps 0..L-2 and
  predicts the last feature at steps 1..L-1 through a sigmoid; trained on synthetic windows, its mean
  absolute error is measured on real ones.

Both sides are min-max scaled with the *real* per-feature range. Columns constant in the real data are
dropped first: they carry no information and make the min-max range 0. Each score is repeated with
fresh networks and splits, and reported as mean and standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model_core.discriminator import (
    GRUHead,
    as_tensor,
    discrimination_gap,
    scale_with_real_range,
    single_thread,
)


@dataclass(frozen=True)
class ScoreSettings:
    """Defaults are the published protocol (TimeGAN's metrics code, reused verbatim by Diffusion-TS)."""

    disc_iterations: int = 2000
    pred_iterations: int = 5000
    batch_size: int = 128
    runs: int = 5
    seed: int = 0


def discriminative_score(
    real: np.ndarray,
    synthetic: np.ndarray,
    settings: ScoreSettings,
    real_stretches: np.ndarray | None = None,
    synthetic_stretches: np.ndarray | None = None,
) -> dict[str, Any]:
    """|accuracy - 0.5| of a post-hoc real/synthetic classifier; see the module docstring. A side with
    stretch labels is split by stretch instead of at random (``discrimination_gap``)."""
    real, synthetic = scale_with_real_range(real, synthetic)
    if real.shape[-1] == 0:
        return _summarise([])
    with single_thread():
        return _summarise(
            [
                discrimination_gap(
                    real,
                    synthetic,
                    settings.disc_iterations,
                    settings.batch_size,
                    settings.seed + run,
                    real_stretches,
                    synthetic_stretches,
                )
                for run in range(settings.runs)
            ]
        )


def predictive_score(real: np.ndarray, synthetic: np.ndarray, settings: ScoreSettings) -> dict[str, Any]:
    """MAE on real windows of a next-step predictor of the last feature trained on synthetic windows."""
    real, synthetic = scale_with_real_range(real, synthetic)
    if real.shape[-1] < 2:  # nothing left to predict the last feature from
        return _summarise([])
    with single_thread():
        return _summarise([_predict_once(real, synthetic, settings, run) for run in range(settings.runs)])


def _predict_once(real: np.ndarray, synthetic: np.ndarray, settings: ScoreSettings, run: int) -> float:
    rng = np.random.default_rng(settings.seed + run)
    torch.manual_seed(settings.seed + run)
    n_features = real.shape[-1]
    train_x, train_y = synthetic[:, :-1, :-1], synthetic[:, 1:, -1:]
    model = GRUHead(n_features - 1, max(n_features // 2, 1), every_step=True)
    optimiser = torch.optim.Adam(model.parameters())
    for _ in range(settings.pred_iterations):
        rows = rng.permutation(len(train_x))[: settings.batch_size]
        prediction = torch.sigmoid(model(as_tensor(train_x[rows])))
        loss = torch.mean(torch.abs(prediction - as_tensor(train_y[rows])))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        prediction = torch.sigmoid(model(as_tensor(real[:, :-1, :-1])))
        return torch.mean(torch.abs(prediction - as_tensor(real[:, 1:, -1:]))).item()


def _summarise(scores: list[float]) -> dict[str, Any]:
    """Mean and (population) std over runs; None when the score is undefined for this data."""
    if not scores:
        return {"mean": None, "std": None, "runs": []}
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "runs": [float(s) for s in scores]}
