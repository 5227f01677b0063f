"""Schedules, posteriors and samplers against their closed forms; the discrete reverse step."""

from __future__ import annotations

import math

import pytest
import torch

from model_core.diffusion import (
    NoiseSchedule,
    mask_tokens,
    min_snr_weight,
    quantile_alignment_loss,
    unmask_step,
)
from model_core.samplers import DDIMSampler, DDPMSampler, make_sampler


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alpha_bar_is_the_product_of_one_minus_beta(kind):
    schedule = NoiseSchedule.make(100, kind)
    assert schedule.alpha_bar[0] == 1 and schedule.betas[0] == 0
    assert torch.allclose(schedule.alpha_bar[1:], torch.cumprod(1 - schedule.betas[1:], 0))
    assert bool((schedule.alpha_bar[1:] < schedule.alpha_bar[:-1]).all())
    assert schedule.alpha_bar[-1] < 1e-3  # ends close to pure noise


def test_cosine_schedule_matches_its_formula():
    schedule = NoiseSchedule.make(50, "cosine")
    f = lambda t: math.cos((t / 50 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 25, 40):
        assert float(schedule.alpha_bar[t]) == pytest.approx(f(t) / f(0), rel=1e-9)


def test_velocity_split_inverts_the_forward_process():
    schedule = NoiseSchedule.make(100, "cosine")
    x0, noise = torch.randn(8, 5, 3, dtype=torch.float64), torch.randn(8, 5, 3, dtype=torch.float64)
    t = torch.randint(1, 101, (8,))
    x_t = schedule.add_noise(x0, noise, t)
    x0_back, noise_back = schedule.split_velocity(x_t, schedule.velocity(x0, noise, t), t)
    assert torch.allclose(x0_back, x0) and torch.allclose(noise_back, noise)


def test_ddpm_posterior_matches_the_gaussian_conditioning_closed_form():
    schedule = NoiseSchedule.make(100, "linear")
    sampler = DDPMSampler(schedule)
    x0, x_t, t = torch.tensor([0.7], dtype=torch.float64), torch.tensor([-0.4], dtype=torch.float64), 37
    mean, variance = sampler.posterior(x0, x_t, t)
    # q(x_{t-1} | x_0) = N(sqrt(ab') x0, 1-ab'), q(x_t | x_{t-1}) = N(sqrt(a) x_{t-1}, beta): Bayes for Gaussians.
    ab_prev, beta = float(schedule.alpha_bar[t - 1]), float(schedule.betas[t])
    precision = 1 / (1 - ab_prev) + (1 - beta) / beta
    expected_mean = (math.sqrt(ab_prev) * 0.7 / (1 - ab_prev) + math.sqrt(1 - beta) * -0.4 / beta) / precision
    assert float(mean) == pytest.approx(expected_mean, rel=1e-9)
    assert variance == pytest.approx(1 / precision, rel=1e-9)


def _oracle_velocity(schedule: NoiseSchedule, x: torch.Tensor, t: int, mu: float, sd: float) -> torch.Tensor:
    """The exact posterior-mean velocity for data ~ N(mu, sd^2)."""
    ab = float(schedule.alpha_bar[t])
    variance = ab * sd**2 + 1 - ab
    x0 = mu + math.sqrt(ab) * sd**2 * (x - math.sqrt(ab) * mu) / variance
    eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    return math.sqrt(ab) * eps - math.sqrt(1 - ab) * x0


@pytest.mark.parametrize(("name", "steps"), [("ddpm", None), ("ddim", 50), ("ddim", 100)])
def test_samplers_with_an_exact_denoiser_recover_the_data_distribution(name, steps):
    schedule = NoiseSchedule.make(100, "cosine")
    sampler = make_sampler(name, schedule, clip=50.0)
    sampler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 1, generator=generator, dtype=torch.float64)
    for t, t_prev in sampler.pairs():
        x = sampler.step(_oracle_velocity(schedule, x, t, 2.0, 0.5), t, t_prev, x, generator)
    assert float(x.mean()) == pytest.approx(2.0, abs=0.02)
    assert float(x.std()) == pytest.approx(0.5, abs=0.05)


def test_ddim_timesteps_and_determinism():
    schedule = NoiseSchedule.make(200, "cosine")
    sampler = DDIMSampler(schedule, eta=0.0)
    sampler.set_timesteps(20)
    assert sampler.timesteps[0] == 200 and sampler.pairs()[-1][1] == 0 and len(sampler.timesteps) == 20
    runs = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(3)
        x = torch.randn(16, 4, generator=generator)
        for t, t_prev in sampler.pairs():
            x = sampler.step(torch.tanh(x), t, t_prev, x, generator)
        runs.append(x)
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize(("name", "steps"), [("ddpm", None), ("ddim", 25)])
def test_a_start_from_noised_data_keeps_the_data_distribution(name, steps):
    # SDEdit: data noised to the level of the first truncated step and denoised from there stays data.
    schedule = NoiseSchedule.make(200, "cosine")
    sampler = make_sampler(name, schedule, clip=50.0)
    sampler.set_timesteps(steps)
    pairs = sampler.pairs_below(20)
    assert pairs[0][0] <= 20 and pairs[-1][1] == 0 and len(pairs) < len(sampler.pairs())
    assert [t for t, _ in sampler.pairs() if t <= 20] == [t for t, _ in pairs]
    generator = torch.Generator().manual_seed(0)
    data = 2.0 + 0.5 * torch.randn(20_000, 1, generator=generator, dtype=torch.float64)
    x = schedule.add_noise(data, torch.randn(data.shape, generator=generator, dtype=torch.float64), torch.full((20_000,), pairs[0][0]))
    for t, t_prev in pairs:
        x = sampler.step(_oracle_velocity(schedule, x, t, 2.0, 0.5), t, t_prev, x, generator)
    assert float(x.mean()) == pytest.approx(2.0, abs=0.02)
    assert float(x.std()) == pytest.approx(0.5, abs=0.05)


def test_a_grid_coarser_than_the_start_level_runs_its_last_step():
    sampler = DDIMSampler(NoiseSchedule.make(100, "cosine"), eta=0.0)
    sampler.set_timesteps(5)
    assert sampler.pairs_below(10) == [sampler.pairs()[-1]]


def test_ddpm_refuses_a_step_count():
    with pytest.raises(ValueError, match="DDIM"):
        DDPMSampler(NoiseSchedule.make(100)).set_timesteps(10)


def test_min_snr_weight():
    schedule = NoiseSchedule.make(100, "cosine")
    t = torch.tensor([1, 50, 100])
    snr = schedule.snr(t).float()
    assert torch.allclose(min_snr_weight(schedule, t, 5.0), torch.clamp(snr, max=5.0) / (snr + 1))
    assert torch.equal(min_snr_weight(schedule, t, 0.0), torch.ones(3))


def test_masking_rate_follows_t_over_T():
    tokens = torch.zeros(4000, 10, 1, dtype=torch.long)
    mask_ids = torch.tensor([2])
    noisy, masked = mask_tokens(tokens, torch.full((4000,), 25), 100, mask_ids, torch.Generator().manual_seed(0))
    assert float(masked.float().mean()) == pytest.approx(0.25, abs=0.01)
    assert bool((noisy[masked] == 2).all()) and bool((noisy[~masked] == 0).all())


def test_unmask_step_reveals_only_valid_categories_and_finishes_at_zero():
    generator = torch.Generator().manual_seed(1)
    mask_ids = torch.tensor([3, 2])
    tokens = mask_ids.expand(500, 8, 2).clone()
    logits = [torch.randn(500, 8, 3), torch.randn(500, 8, 2)]
    half = unmask_step(tokens, logits, 100, 50, mask_ids, generator)
    revealed = half != mask_ids
    assert float(revealed.float().mean()) == pytest.approx(0.5, abs=0.02)
    final = unmask_step(half, logits, 50, 0, mask_ids, generator)
    assert bool((final[..., 0] < 3).all()) and bool((final[..., 1] < 2).all())
    assert torch.equal(final[revealed], half[revealed])  # revealed tokens never change


def test_unmask_step_draws_categories_with_the_predicted_probabilities():
    mask_ids = torch.tensor([3])
    tokens = mask_ids.expand(4000, 8, 1).clone()
    probabilities = torch.tensor([1 / 6, 2 / 6, 3 / 6])
    logits = [probabilities.log().expand(4000, 8, 3)]
    drawn = unmask_step(tokens, logits, 10, 0, mask_ids, torch.Generator().manual_seed(2))
    shares = torch.bincount(drawn.flatten(), minlength=3).float() / drawn.numel()
    assert torch.allclose(shares, probabilities, atol=0.01)


def test_quantile_loss_is_zero_for_equal_distributions_and_grows_with_shift():
    x = torch.randn(64, 24, 3)
    assert float(quantile_alignment_loss(x[torch.randperm(64)], x)) == pytest.approx(0.0, abs=1e-6)
    assert float(quantile_alignment_loss(x + 1.0, x)) == pytest.approx(1.0, rel=1e-4)
