"""Stage 1: ``TemporalGRUGenerator``, the trend model.

A GRU over the (transformed) continuous features, trained by teacher forcing to predict the next step.
The *trend* of a window is its one-step-ahead prediction ``trend_t = f(x_{t-C..t-1})`` from the ``C``
real steps before each position; the *residual* ``x_t - trend_t`` is what stage 2 models.

New trends come from a stochastic rollout: starting from a context of ``C`` steps, each step predicts
``trend_t``, draws a residual vector from the pool of real training residuals (a bootstrap, so the
rollout noise keeps the residuals' cross-feature correlation and heavy tails), and feeds
``trend_t + residual`` back in. Rollouts are therefore as diverse as the data's own innovations and
cannot collapse onto the deterministic fixed point of the GRU.

The draw is *local*: only among the residuals of the ``k`` training rows whose trend is nearest the
current one. Innovations depend on the state: a pump that is running at a steady flow gets the
innovations seen at such flows, not the jump of a pump switching on somewhere else in the plant.
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
        """Trend [B, L + 1, D] of ``window`` [B, L, D] given the ``context`` [B, C, D] right before it.

        The extra last step is the prediction of the step after the window. Step ``t + 1``'s trend is
        computed from ``x_t``, so it tells the denoiser which residual step ``t`` had (see
        ``ResidualDenoiser.forward``).
        """
        predictions, _ = self(torch.cat([context, window], dim=1))
        return predictions[:, context.shape[1] - 1 :]

    @torch.no_grad()
    def rollout(
        self, context: torch.Tensor, length: int, innovations: InnovationPool, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate ``length`` steps after ``context`` [B, C, D].

        Returns ``(trend, path)``: the trend [B, length + 1, D] the diffusion stage is conditioned on (as
        ``window_trend``, with the step after the last) and the sampled path [B, length, D] it was rolled
        out along.
        """
        predictions, hidden = self(context)
        prediction = predictions[:, -1:]
        trends, path = [], []
        for _ in range(length):
            value = prediction + innovations.draw(prediction[:, 0], generator)[:, None]
            trends.append(prediction)
            path.append(value)
            prediction, hidden = self(value, hidden)
        trends.append(prediction)
        return torch.cat(trends, dim=1), torch.cat(path, dim=1)


class InnovationPool:
    """Training residuals with the trend they occurred at; draws among the ``neighbours`` nearest trends.

    ``neighbours`` 0 draws from the whole pool (a plain bootstrap).
    """

    def __init__(self, trends: torch.Tensor, residuals: torch.Tensor, neighbours: int):
        self.trends = trends
        self.residuals = residuals
        self.neighbours = min(neighbours, len(residuals))
        self._squared_norms = (trends * trends).sum(dim=1)

    def draw(self, trend: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One residual [B, D] for each current trend [B, D]."""
        batch = len(trend)
        if self.neighbours == 0:
            rows = torch.randint(0, len(self.residuals), (batch,), generator=generator)
        else:
            # Squared distances up to a per-row constant: |t|^2 is the same for all candidates of a row.
            distances = self._squared_norms - 2.0 * trend @ self.trends.T
            nearest = distances.topk(self.neighbours, dim=1, largest=False).indices
            pick = torch.randint(0, self.neighbours, (batch, 1), generator=generator).to(nearest.device)
            rows = nearest.gather(1, pick)[:, 0]
        return self.residuals[rows.to(self.residuals.device)]
