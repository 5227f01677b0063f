"""The residual denoiser and its two interchangeable sequence backbones.

``ResidualDenoiser`` embeds, per time step, the noisy continuous residual, the trend it must be added to,
and the (partly masked) discrete tokens, adds an embedding of the diffusion step, runs a backbone over the
window, and reads out the predicted velocity (see diffusion.py) of every continuous residual and category logits of every
discrete feature. Both backbones map ``[B, L, H] -> [B, L, H]`` and see the whole window in both
directions, which denoising needs (the future of a window constrains its past as much as the reverse).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sin/cos features of integer positions (diffusion steps or time indices)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=positions.device) / max(half - 1, 1))
    angles = positions.float()[..., None] * freqs
    embedding = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return nn.functional.pad(embedding, (0, dim - 2 * half))


class GRUBackbone(nn.Module):
    """Bidirectional GRU; each direction carries half the width."""

    def __init__(self, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.gru = nn.GRU(
            hidden_size,
            hidden_size // 2,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.project = nn.Linear(2 * (hidden_size // 2), hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(h)
        return h + self.project(out)


class TransformerBackbone(nn.Module):
    """Pre-norm Transformer encoder with sinusoidal positional encoding."""

    def __init__(self, hidden_size: int, num_layers: int, num_heads: int, dropout: float):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            hidden_size,
            num_heads,
            dim_feedforward=2 * hidden_size,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        positions = sinusoidal_embedding(torch.arange(h.shape[1], device=h.device), h.shape[-1])
        return self.norm(self.encoder(h + positions))


class ResidualDenoiser(nn.Module):
    def __init__(
        self,
        n_continuous: int,
        n_categories: list[int],
        hidden_size: int,
        num_layers: int,
        backbone_type: str,
        num_heads: int = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_continuous = n_continuous
        self.n_categories = list(n_categories)
        self.hidden_size = hidden_size
        # Per step: the noisy residual, the trend, and how the trend moves to the next step.
        self.continuous_in = nn.Linear(3 * n_continuous, hidden_size) if n_continuous else None
        # One embedding table for all discrete features; feature j's ids start at offsets[j].
        # Each feature has its categories plus one MASK id.
        sizes = [k + 1 for k in self.n_categories]
        self.offsets: torch.Tensor
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]], dtype=torch.long).cumsum(0), persistent=False)
        self.discrete_in = nn.Embedding(sum(sizes), hidden_size) if sizes else None
        self.time_mlp = nn.Sequential(
            nn.Linear(hidden_size, 2 * hidden_size), nn.SiLU(), nn.Linear(2 * hidden_size, hidden_size)
        )
        if backbone_type == "gru":
            self.backbone: nn.Module = GRUBackbone(hidden_size, num_layers, dropout)
        elif backbone_type == "transformer":
            self.backbone = TransformerBackbone(hidden_size, num_layers, num_heads, dropout)
        else:
            raise ValueError(f"unknown backbone_type {backbone_type!r} (expected 'gru' or 'transformer')")
        self.head = nn.Linear(hidden_size, n_continuous + sum(self.n_categories))

    def forward(
        self, x_t: torch.Tensor, trend: torch.Tensor, tokens: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Predict (velocity [B, L, Dc], per-discrete-feature logits [B, L, K_j]) at diffusion steps ``t`` [B].

        ``trend`` is [B, L + 1, Dc]: the window's trend and the step after it. The next step's trend is
        computed from this step's value, so its move ``trend[t + 1] - trend[t]`` carries this step's
        residual. Without it, a sampled residual is independent of the innovation that the rollout fed
        forward, every value carries two innovations, and the series comes out rougher than the data.
        """
        batch, length = tokens.shape[0], tokens.shape[1]
        h = self.time_mlp(sinusoidal_embedding(t, self.hidden_size))[:, None, :].expand(batch, length, -1)
        if self.continuous_in is not None:
            now, after = trend[:, :-1], trend[:, 1:]
            h = h + self.continuous_in(torch.cat([x_t, now, after - now], dim=-1))
        if self.discrete_in is not None:
            h = h + self.discrete_in(tokens + self.offsets).sum(dim=2)
        out = self.head(self.backbone(h))
        velocity = out[..., : self.n_continuous]
        logits = list(torch.split(out[..., self.n_continuous :], self.n_categories, dim=-1)) if self.n_categories else []
        return velocity, logits
