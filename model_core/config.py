"""The one configuration of the whole pipeline, saved with every model as ``config.json``.

Every knob of the design lives here, with its default, so there is exactly one place to read what a
model was trained with. Every section forbids unknown keys: a typo in ``config.json`` or in the
service's config overrides is an error that names the key, never a silently ignored setting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """How a CSV becomes a typed table (see ``schema.py``)."""

    timestamp_column: str | None = Field(
        None, description="Timestamp column; detected (a column named like 'date'/'time' that parses) when unset."
    )
    drop_columns: list[str] = Field(default_factory=list, description="Columns removed before anything else.")
    discrete_columns: list[str] = Field(default_factory=list, description="Columns forced discrete.")
    continuous_columns: list[str] = Field(default_factory=list, description="Columns forced continuous.")
    max_discrete_levels: int = Field(
        10, ge=2, le=256, description="An integer-valued column with at most this many levels is discrete."
    )
    max_fill_gap: int = Field(
        3, ge=0, description="Runs of at most this many missing cells are forward-filled; longer runs are an error."
    )

    @model_validator(mode="after")
    def _no_double_override(self) -> DataConfig:
        both = sorted(set(self.discrete_columns) & set(self.continuous_columns))
        if both:
            raise ValueError(f"columns forced both discrete and continuous: {both}")
        return self


class WindowConfig(_Section):
    seq_len: int = Field(24, ge=2, le=4096, description="Training window length (time steps).")
    stride: int = Field(1, ge=1, description="Step between consecutive training windows.")


class TransformConfig(_Section):
    normalization: Literal["standard", "quantile"] = Field(
        "quantile", description="Continuous features: z-score, or QuantileTransformer to a normal (TabDDPM)."
    )
    bounds: Literal["none", "clip", "sigmoid"] = Field(
        "sigmoid",
        description="Keep outputs in the observed [min, max]: 'clip' piles mass on the edges, 'sigmoid' does not. "
        "Quantile normalisation is bounded by construction, so bounds only change 'standard'.",
    )
    n_quantiles: int = Field(1000, ge=10, le=100_000, description="Quantiles of the QuantileTransformer.")
    linear_ramps: bool = Field(
        True,
        description="With quantile normalisation, z-score instead the continuous features whose ramps the quantile "
        "map would bend (a tank filling at a steady rate; see transforms.ramping_features), so they stay as smooth "
        "as the data.",
    )
    snap_to_levels: bool = Field(
        True,
        description="A continuous feature read at a fixed resolution (at most one distinct value per 4 rows, a "
        "sensor that reports in steps) is generated on the values it was observed at, not between them "
        "(see transforms.resolution_levels).",
    )


class TrendConfig(_Section):
    enabled: bool = Field(True, description="Stage 1 on; off means the diffusion models the data directly.")
    hidden_size: int = Field(64, ge=4, le=2048)
    num_layers: int = Field(1, ge=1, le=8)
    epochs: int = Field(15, ge=1, le=1000, description="Passes over the training windows.")
    lr: float = Field(3e-3, gt=0, le=1.0)
    context_len: int = Field(24, ge=1, le=4096, description="Real steps that warm up a rollout's hidden state.")
    discrete_states: bool = Field(
        True,
        description="Stage 1 also reads the discrete states and samples the next ones in its rollout, so state "
        "dwell times follow the data; the diffusion then fills in the continuous residual given them. Off: the "
        "diffusion samples the states from the trend alone.",
    )
    calendar: bool = Field(
        True,
        description="Stage 1 reads each step's time of day and of week (where the timestamps resolve and span "
        "those cycles), so rollouts follow the data's daily and weekly schedules. No effect without a "
        "timestamp column.",
    )
    state_lead: bool = Field(
        True,
        description="The continuous prediction of each step also reads the states sampled for that step, so a flow "
        "jumps and a tank turns in the hour its pump switches instead of an hour later.",
    )
    swap_innovations: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of the rows stage 1 reads in training (from its third epoch, after the first half of "
        "each context) whose innovation is swapped for another row's: the rows a rollout feeds it are like that, "
        "and it learns to predict the real next step from them (docs/DECISIONS.md). 0 = plain teacher forcing.",
    )
    innovation_neighbours: int = Field(
        2,
        ge=0,
        le=4096,
        description="Rollout noise is drawn among the training residuals of the k rows whose trend is nearest "
        "the current one (state-dependent noise); 0 = among all residuals. Without sampling.avoid_replay, 1 replays "
        "the training data (each row is in the pool once, so its nearest trend is the real moment itself).",
    )


class DiffusionConfig(_Section):
    timesteps: int = Field(200, ge=2, le=10_000, description="Diffusion steps T of training and of DDPM sampling.")
    noise_schedule: Literal["linear", "cosine"] = "cosine"
    backbone_type: Literal["gru", "transformer"] = Field(
        "gru",
        description="Denoiser backbone. gru (bidirectional) measured equal or better than transformer on BATADAL "
        "and ETTh1 (docs/DECISIONS.md).",
    )
    hidden_size: int = Field(64, ge=8, le=2048, description="Width of the denoiser.")
    num_layers: int = Field(2, ge=1, le=24)
    num_heads: int = Field(4, ge=1, le=64, description="Attention heads (transformer backbone only).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> DiffusionConfig:
        if self.backbone_type == "transformer" and self.hidden_size % self.num_heads:
            raise ValueError(
                f"diffusion.hidden_size ({self.hidden_size}) must be divisible by diffusion.num_heads ({self.num_heads})"
            )
        return self


class LossConfig(_Section):
    snr_gamma: float = Field(5.0, ge=0.0, description="Min-SNR-gamma weighting of the denoising loss; 0 = off.")
    quantile_weight: float = Field(0.1, ge=0.0, description="Quantile alignment of predicted clean residuals; 0 = off.")
    residual_stats_weight: float = Field(0.1, ge=0.0, description="Residual mean/std regularisation; 0 = off.")
    discrete_weight: float = Field(1.0, ge=0.0, description="Weight of the discrete (masked) cross-entropy.")


class TrainingConfig(_Section):
    batch_size: int = Field(128, ge=1, le=65_536)
    max_steps: int = Field(
        7000, ge=1, description="Optimiser steps of the denoiser (upper bound; BATADAL: 7 to 10 minutes on 2 CPU cores)."
    )
    max_minutes: float | None = Field(
        9.5,
        gt=0,
        description=(
            "Wall-clock budget of the whole training run. When max_steps would not fit, the denoiser plans "
            "fewer steps (learning-rate schedule included) from its measured pace; null = no budget, so the "
            "same seed gives the same model on any machine."
        ),
    )
    lr: float = Field(1e-3, gt=0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    ema_decay: float = Field(0.995, ge=0.0, lt=1.0)
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="Share of the rows held out for validation, in blocks spread over the series.")
    eval_every: int = Field(250, ge=1, description="Steps between validation losses.")
    patience: int = Field(6, ge=0, description="Validations without improvement before stopping; 0 = never stop early.")
    choose_strength: bool = Field(
        True,
        description="After training, generate windows at sampling.strength and at 1 (pure noise) and keep "
        "sampling.strength unless a real-vs-synthetic classifier (TimeGAN's discriminative score, one run) tells "
        "strength 1 apart clearly less (by more than 0.05); the choice is saved in the model's config and both "
        "scores in its manifest. Takes about 1.5 minutes on BATADAL on 2 CPU cores, which the denoiser leaves it "
        "within max_minutes. No effect without a trend or at strength 1.",
    )
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' uses CUDA when present.")


class SamplingConfig(_Section):
    sampler: Literal["ddpm", "ddim"] = "ddim"
    steps: int = Field(25, ge=1, le=10_000, description="DDIM steps (DDPM uses every timestep); either runs only those below sampling.strength's level.")
    eta: float = Field(0.0, ge=0.0, le=1.0, description="DDIM stochasticity (0 = deterministic given the noise).")
    strength: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="Where the residual's reverse diffusion starts, as a fraction of the schedule (SDEdit): 1 starts "
        "from pure noise; below 1 starts from stage 1's own rollout residual noised to that level and runs only the "
        "sampler's steps below it, so the output keeps the rollout's step-to-step consistency. No effect without a "
        "trend.",
    )
    follow_couplings: bool = Field(
        True,
        description="Stage 1's rollout keeps each continuous feature inside what its discrete states allow under the "
        "exact couplings found in the data (a flow's zero while its pump is off, a pressure's range per pump state), "
        "choosing among its candidate innovations, and a value the denoiser moves outside keeps the rollout's value; "
        "without it, the repair after generation moves such values to another step's (docs/DECISIONS.md).",
    )
    avoid_replay: bool = Field(
        True,
        description="Stage 1's rollout never draws, as a step's innovation, the residual of the real row that came "
        "right after the row its previous step's innovation (or its context's last step) came from: that residual "
        "continues the real series, and the nearest-trend draw otherwise picks it whenever the rollout is at a real "
        "moment. Keeps synthetic windows from tracing stretches of the training data (docs/DECISIONS.md). Needs a "
        "bundle that records its pool's rows (trained since); no effect with trend.innovation_neighbours 0.",
    )
    chunk_size: int = Field(512, ge=1, description="Windows generated at once; bounds memory.")


class TSSynthConfig(_Section):
    """The whole pipeline. ``TSSynthConfig()`` is the documented default."""

    data: DataConfig = Field(default_factory=DataConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    transform: TransformConfig = Field(default_factory=TransformConfig)
    trend: TrendConfig = Field(default_factory=TrendConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)

    @model_validator(mode="after")
    def _ddim_steps_fit(self) -> TSSynthConfig:
        if self.sampling.steps > self.diffusion.timesteps:
            raise ValueError(
                f"sampling.steps ({self.sampling.steps}) exceeds diffusion.timesteps ({self.diffusion.timesteps})"
            )
        return self

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, missing: Mapping[tuple[str, str], Any] | None = None) -> TSSynthConfig:
        """Read a config file; ``missing`` gives ``(section, key)`` values for keys the file lacks, where they
        should not take today's default."""
        try:
            raw = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        for (section, key), value in (missing or {}).items():
            if isinstance(raw, dict) and isinstance(raw.get(section), dict):
                raw[section].setdefault(key, value)
        return parse_config(raw, source=str(path))

    def with_overrides(self, overrides: dict[str, Any]) -> TSSynthConfig:
        """A copy with a nested dict of overrides merged in, validated as a whole."""
        merged = _deep_merge(self.model_dump(), overrides)
        return parse_config(merged, source="overrides")


class ConfigError(ValueError):
    """An invalid configuration; the message names every offending key."""


def parse_config(raw: Any, source: str = "config") -> TSSynthConfig:
    try:
        return TSSynthConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc


def format_validation_error(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{key}: {msg}")
    return f"invalid {source}: " + "; ".join(problems)


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
