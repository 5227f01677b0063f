"""Diffusion processes and their training losses.

Continuous residuals: Gaussian DDPM with a linear or cosine noise schedule. The denoiser predicts the
velocity ``v`` rather than the noise: with noise prediction, ``x0 = (x_t - sqrt(1-ab) eps) / sqrt(ab)``
divides the network's error by ``sqrt(ab)``, which is ~1e-4 at the last steps of a cosine schedule, and
sampling diverged in our first runs; ``v`` gives ``x0`` and the noise without any division. Time runs over ``t = 1..T``;
index 0 of every schedule array is the clean data (``alpha_bar[0] = 1``), so the last reverse step lands
exactly on ``t = 0`` for DDPM and DDIM alike.

Discrete features: absorbing-state ("mask") diffusion. At time ``t`` each category token is independently
replaced by a MASK token with probability ``t / T``; the denoiser predicts the original category of
masked tokens. We chose it over multinomial (uniform-noise) diffusion because (1) a masked token tells
the network exactly which values are unknown, so it never has to undo plausible-looking wrong states;
(2) the reverse step only ever writes a category the network predicted, so every output is a valid state;
(3) the reverse step is well defined between any two times, so DDIM-style step skipping needs no extra
derivation. Both processes share ``t`` and one denoiser, so a pump's state and its flow are denoised
together and their dependence is learned jointly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Quantile levels at which predicted and true clean residuals are aligned.
QUANTILE_LEVELS = torch.linspace(0.05, 0.95, 19)
#: The quantile / statistics losses only use samples at least this clean (alpha_bar), where the
#: predicted clean residual is informative rather than an amplified noise estimate.
ALIGNMENT_MIN_ALPHA_BAR = 0.5


@dataclass
class NoiseSchedule:
    """``betas[t]``, ``alphas[t]`` and ``alpha_bar[t]`` for ``t = 0..T`` (index 0 is clean data)."""

    betas: torch.Tensor
    alpha_bar: torch.Tensor

    @classmethod
    def make(cls, timesteps: int, kind: str = "cosine") -> NoiseSchedule:
        if kind == "linear":
            # Ho et al.'s range, rescaled so that short schedules still end near pure noise.
            scale = 1000 / timesteps
            betas = torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), timesteps, dtype=torch.float64)
            alpha_bar = torch.cumprod(1 - betas, dim=0)
        elif kind == "cosine":
            # Nichol & Dhariwal: alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) * pi/2) / f(0), betas clipped at 0.999.
            s = 0.008
            steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = torch.clamp(1 - f[1:] / f[:-1], max=0.999)
            alpha_bar = torch.cumprod(1 - betas, dim=0)
        else:
            raise ValueError(f"unknown noise schedule {kind!r}")
        return cls(
            betas=torch.cat([torch.zeros(1, dtype=torch.float64), betas]),
            alpha_bar=torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar]),
        )

    @property
    def timesteps(self) -> int:
        return len(self.betas) - 1

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar.to(t.device)[t]
        return ab / (1 - ab)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(sqrt(ab) x_0, (1 - ab) I) for a batch of per-sample times ``t``."""
        ab = _per_sample(self.alpha_bar.to(x0.device)[t], x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The v-prediction target ``sqrt(ab) * noise - sqrt(1 - ab) * x0`` (Salimans & Ho 2022)."""
        ab = _per_sample(self.alpha_bar.to(x0.device)[t], x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def split_velocity(self, x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, noise) implied by a predicted velocity; no division, so no blow-up at high noise."""
        ab = _per_sample(self.alpha_bar.to(x_t.device)[t], x_t)
        return ab.sqrt() * x_t - (1 - ab).sqrt() * v, (1 - ab).sqrt() * x_t + ab.sqrt() * v


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


# ---- discrete (absorbing-state) process ------------------------------------------------------------------
def mask_probability(t: torch.Tensor, timesteps: int) -> torch.Tensor:
    return t.to(torch.float32) / timesteps


def mask_tokens(
    tokens: torch.Tensor, t: torch.Tensor, timesteps: int, mask_ids: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward process: replace each token by its feature's MASK id with probability t/T.

    ``tokens`` is [B, L, Dd]; ``mask_ids`` [Dd] holds each feature's MASK id (its number of categories).
    Returns the noised tokens and the boolean mask of replaced positions.
    """
    p = _per_sample(mask_probability(t, timesteps), tokens.float())
    masked = torch.rand(tokens.shape, generator=generator, device=tokens.device) < p
    return torch.where(masked, mask_ids.to(tokens.device).expand_as(tokens), tokens), masked


def unmask_step(
    tokens: torch.Tensor,
    logits: list[torch.Tensor],
    t: int,
    t_prev: int,
    mask_ids: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Reverse step t -> t_prev of the absorbing process.

    A token masked at time t is still masked at t_prev with probability t_prev / t; otherwise it is
    revealed with a category drawn from the network's prediction. Revealed tokens never change again.
    """
    out = tokens.clone()
    reveal_probability = 1.0 if t_prev == 0 else (t - t_prev) / t
    for j, feature_logits in enumerate(logits):
        masked = tokens[..., j] == mask_ids[j]
        if not masked.any():
            continue
        reveal = masked & (
            torch.rand(masked.shape, generator=generator, device=tokens.device) < reveal_probability
        )
        # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits), without building the
        # probabilities and without torch.multinomial (which took a fifth of a small request's time).
        uniform = torch.rand(feature_logits.shape, generator=generator, device=tokens.device).clamp_min(1e-20)
        draws = (feature_logits.float() - torch.log(-torch.log(uniform))).argmax(dim=-1)
        out[..., j] = torch.where(reveal, draws, out[..., j])
    return out


# ---- losses --------------------------------------------------------------------------------------------
@dataclass
class LossTerms:
    total: torch.Tensor
    denoise: torch.Tensor
    quantile: torch.Tensor
    stats: torch.Tensor
    discrete: torch.Tensor


def min_snr_weight(schedule: NoiseSchedule, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma (Hang et al. 2023) for v-prediction: min(SNR, gamma) / (SNR + 1); off when gamma = 0.

    The v-loss equals (SNR + 1) times the x0-loss; this weight turns it into the x0-loss with the weight
    of low-noise steps, whose easy denoising otherwise dominates the gradient, capped at gamma. Off means
    the plain (unweighted) v-loss.
    """
    if gamma <= 0:
        return torch.ones_like(t, dtype=torch.float32)
    snr = schedule.snr(t).float()
    return torch.clamp(snr, max=gamma) / (snr + 1)


def quantile_alignment_loss(x0_pred: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """L1 distance between per-feature quantiles of predicted and true clean residuals in the batch.

    The denoising loss matches residuals pointwise in expectation; this matches their *distribution*
    (tails included), which is what the KS diagnostics measure.
    """
    if x0.numel() == 0 or x0.shape[-1] == 0:
        return x0.new_zeros(())
    levels = QUANTILE_LEVELS.to(x0.device, x0.dtype)
    pred = torch.quantile(x0_pred.reshape(-1, x0.shape[-1]), levels, dim=0)
    true = torch.quantile(x0.reshape(-1, x0.shape[-1]), levels, dim=0)
    return (pred - true).abs().mean()


def residual_stats_loss(x0_pred: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Squared gap of per-feature mean and standard deviation of predicted vs true clean residuals."""
    if x0.numel() == 0 or x0.shape[-1] == 0 or x0.reshape(-1, x0.shape[-1]).shape[0] < 2:
        return x0.new_zeros(())
    pred, true = x0_pred.reshape(-1, x0.shape[-1]), x0.reshape(-1, x0.shape[-1])
    return ((pred.mean(0) - true.mean(0)) ** 2).mean() + ((pred.std(0) - true.std(0)) ** 2).mean()


def discrete_loss(logits: list[torch.Tensor], tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the masked positions (the only ones the network must predict)."""
    total, count = tokens.new_zeros((), dtype=torch.float32), 0
    for j, feature_logits in enumerate(logits):
        chosen = masked[..., j]
        if chosen.any():
            total = total + F.cross_entropy(feature_logits[chosen].float(), tokens[..., j][chosen], reduction="sum")
            count += int(chosen.sum())
    return total / max(count, 1)
