"""Reverse-process samplers for the Gaussian part, as small objects separate from the networks.

Usage (as in diffusers' schedulers)::

    sampler = make_sampler("ddim", schedule, eta=0.0)
    sampler.set_timesteps(50)
    for t, t_prev in sampler.pairs():
        v = network(x, t)                      # predicted velocity (see diffusion.py)
        x = sampler.step(v, t, t_prev, x, generator)

Both samplers derive ``x_0`` from the velocity and clamp it to ``[-clip, clip]`` (the largest residual
seen in training, with margin), so an early bad estimate cannot push the trajectory off the data.
"""

from __future__ import annotations

import torch

from model_core.diffusion import NoiseSchedule


class _Sampler:
    def __init__(self, schedule: NoiseSchedule, clip: float | None = None):
        self.schedule = schedule
        self.clip = clip
        self.timesteps: list[int] = list(range(schedule.timesteps, 0, -1))

    def set_timesteps(self, num_steps: int | None = None) -> None:
        raise NotImplementedError

    def pairs(self) -> list[tuple[int, int]]:
        """``(t, t_prev)`` for every reverse step; the last ``t_prev`` is 0 (clean data)."""
        return list(zip(self.timesteps, [*self.timesteps[1:], 0], strict=True))

    def pairs_below(self, level: float) -> list[tuple[int, int]]:
        """The reverse steps from timestep ``level`` down (SDEdit starts there); the last step alone when
        the grid has none at or below it."""
        pairs = self.pairs()
        return [(t, t_prev) for t, t_prev in pairs if t <= level] or pairs[-1:]

    def _x0_and_noise(self, v: torch.Tensor, t: int, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x0 (clamped) and the noise consistent with it and ``x_t``."""
        ab = float(self.schedule.alpha_bar[t])
        x0 = ab**0.5 * x_t - (1 - ab) ** 0.5 * v
        if self.clip is None:
            return x0, (1 - ab) ** 0.5 * x_t + ab**0.5 * v
        x0 = x0.clamp(-self.clip, self.clip)
        return x0, (x_t - ab**0.5 * x0) / (1 - ab) ** 0.5

    def step(
        self, v: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        raise NotImplementedError


class DDPMSampler(_Sampler):
    """Ancestral sampling through every timestep with the posterior variance beta-tilde."""

    def set_timesteps(self, num_steps: int | None = None) -> None:
        if num_steps not in (None, self.schedule.timesteps):
            raise ValueError(f"DDPM runs all {self.schedule.timesteps} timesteps; use DDIM for {num_steps} steps")
        self.timesteps = list(range(self.schedule.timesteps, 0, -1))

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, float]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 6-7)."""
        ab, ab_prev = float(self.schedule.alpha_bar[t]), float(self.schedule.alpha_bar[t - 1])
        beta = float(self.schedule.betas[t])
        mean = (ab_prev**0.5 * beta / (1 - ab)) * x0 + ((1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab)) * x_t
        return mean, beta * (1 - ab_prev) / (1 - ab)

    def step(
        self, v: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        mean, variance = self.posterior(self._x0_and_noise(v, t, x_t)[0], x_t, t)
        if t_prev == 0:
            return mean
        noise = torch.randn(x_t.shape, generator=generator, device=generator.device if generator else None)
        return mean + variance**0.5 * noise.to(x_t.device, x_t.dtype)


class DDIMSampler(_Sampler):
    """DDIM (Song et al. 2021) over an evenly spaced subset of timesteps; ``eta = 0`` is deterministic."""

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0, clip: float | None = None):
        super().__init__(schedule, clip)
        self.eta = eta

    def set_timesteps(self, num_steps: int | None = None) -> None:
        total = self.schedule.timesteps
        num_steps = min(num_steps or total, total)
        # Evenly spaced from T down to >= 1, always including T itself.
        steps = torch.linspace(total, 1, num_steps).round().long().tolist()
        self.timesteps = sorted(set(steps), reverse=True)

    def step(
        self, v: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        ab, ab_prev = float(self.schedule.alpha_bar[t]), float(self.schedule.alpha_bar[t_prev])
        x0, eps = self._x0_and_noise(v, t, x_t)
        sigma = self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
        direction = max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
        out = ab_prev**0.5 * x0 + direction
        if sigma > 0 and t_prev > 0:
            noise = torch.randn(x_t.shape, generator=generator, device=generator.device if generator else None)
            out = out + sigma * noise.to(x_t.device, x_t.dtype)
        return out


def make_sampler(name: str, schedule: NoiseSchedule, eta: float = 0.0, clip: float | None = None) -> _Sampler:
    if name == "ddpm":
        return DDPMSampler(schedule, clip)
    if name == "ddim":
        return DDIMSampler(schedule, eta, clip)
    raise ValueError(f"unknown sampler {name!r} (expected 'ddpm' or 'ddim')")
