"""Stage 1: ``TemporalGRUGenerator``, the trend model.

A GRU over the (transformed) continuous features, trained by teacher forcing to predict the next step.
The *trend* of a window is its one-step-ahead prediction ``trend_t = f(x_{t-C..t-1})`` from the ``C``
real steps before each position; the *residual* ``x_t - trend_t`` is what stage 2 models.

New trends come from a stochastic rollout: starting from a context of ``C`` steps, each step predicts
``trend_t``, draws a residual vector from the pool of real training residuals (a bootstrap, so the
rollout noise keeps the residuals' cross-feature correlation and heavy tails), and feeds
``trend_t + residual`` back in. Rollouts are therefore as diverse as the data's own innovations and
cannot collapse onto the deterministic fixed point of the GRU.
"""

from __future__ import annotations

import torch
from torch import nn


class TemporalGRUGenerator(nn.Module):
    def __init__(self, n_features: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.gru = nn.GRU(n_features, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_features)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [B, L, D] -> predictions [B, L, D] where ``out[:, t]`` predicts ``x[:, t + 1]``."""
        out, hidden = self.gru(x, hidden)
        # Predict the change, not the level: the identity is a strong prior for slow sensors.
        return x + self.head(out), hidden

    def window_trend(self, context: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """Trend of ``window`` [B, L, D] given the ``context`` [B, C, D] of real steps right before it."""
        series = torch.cat([context, window[:, :-1]], dim=1)
        predictions, _ = self(series)
        return predictions[:, context.shape[1] - 1 :]

    @torch.no_grad()
    def rollout(
        self, context: torch.Tensor, length: int, residual_pool: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate ``length`` steps after ``context`` [B, C, D].

        Returns ``(trend, path)``, both [B, length, D]: the trend the diffusion stage is conditioned on and
        the sampled path it was rolled out along.
        """
        predictions, hidden = self(context)
        prediction = predictions[:, -1:]
        trends, path = [], []
        draws = torch.randint(0, len(residual_pool), (context.shape[0], length), generator=generator)
        noise = residual_pool[draws].to(context.device, context.dtype)
        for step in range(length):
            value = prediction + noise[:, step : step + 1]
            trends.append(prediction)
            path.append(value)
            prediction, hidden = self(value, hidden)
        return torch.cat(trends, dim=1), torch.cat(path, dim=1)
