"""The engine end to end on the demo plant: train a tiny model once, then check what it generates."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from model_core import train as train_module
from model_core.bundle import FORMAT_VERSION, BundleError, load_bundle, save_bundle, trend_calendar_periods
from model_core.calendar import calendar_features, epoch_seconds
from model_core.config import TSSynthConfig
from model_core.couplings import apply_couplings
from model_core.diagnostics import diagnose
from model_core.generate import generate, innovation_pool, iter_generate, rollout_calendar, sample_model_space
from model_core.schema import DataError, prepare_table
from model_core.simulator import simulate_plant
from model_core.train import (
    Progress,
    TrainingCancelled,
    split_by_time,
    steps_within_budget,
    swapped_innovations,
    train,
)
from model_core.trend import InnovationPool, TemporalGRUGenerator
from model_core.windows import window_starts

# The strength choice (on by default) would add most of a minute to every training here: its own test
# turns it on.
TINY = {
    "training": {"max_steps": 400, "batch_size": 64, "eval_every": 100, "lr": 2e-3, "choose_strength": False},
    "trend": {"epochs": 6, "hidden_size": 32},
    "diffusion": {"hidden_size": 48, "num_layers": 2, "timesteps": 100},
    "sampling": {"steps": 20},
}


@pytest.fixture(scope="module")
def plant() -> pd.DataFrame:
    return simulate_plant(rows=1500, seed=11)


@pytest.fixture(scope="module")
def trained(plant):
    events: list[Progress] = []
    started = time.monotonic()
    bundle = train(plant, TSSynthConfig().with_overrides(TINY), progress=events.append)
    return bundle, events, time.monotonic() - started


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    return save_bundle(trained[0], tmp_path_factory.mktemp("models") / "tiny")


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in ("step", "timestamp") if c in frame.columns])


def _windows(frame: pd.DataFrame, n: int, length: int = 24) -> pd.DataFrame:
    """Consecutive non-overlapping real windows in the long format (with sequence ids)."""
    rows = frame.drop(columns=["timestamp"]).iloc[: n * length].reset_index(drop=True)
    rows.insert(0, "sequence_id", np.repeat(np.arange(n), length))
    return rows


def test_training_reports_progress_in_stage_order_and_fills_the_manifest(trained):
    bundle, events, seconds = trained
    stages = [e.stage for e in events]
    assert stages[0] == "prepare" and stages[-1] == "validate"
    order = ["prepare", "trend", "diffusion", "validate"]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == order
    last_diffusion = [e for e in events if e.stage == "diffusion"][-1]
    assert last_diffusion.step == bundle.manifest["training"]["steps"] and last_diffusion.eta_seconds == 0
    assert bundle.manifest["rows"] == 1500 and len(bundle.manifest["data_sha256"]) == 64
    assert bundle.manifest["validation"]["summary"]["ks_mean"] is not None
    assert bundle.manifest["validation_rows"] == 150  # val_fraction 0.1, in 3 blocks of 50 rows
    assert seconds < 120  # tiny on purpose; the budget is generous for slow CI machines


def test_beats_independent_per_feature_samples_on_ks_and_lag1(trained, plant):
    """Generous margins: this guards correctness (a broken sampler scores like noise), not quality."""
    bundle = trained[0]
    reference = _windows(simulate_plant(rows=3000, seed=99), 100)
    synthetic = _features(generate(bundle, 100, seed=5))
    # Baseline: every feature drawn i.i.d. from a normal with the training mean and std.
    rng = np.random.default_rng(0)
    values = plant.drop(columns=["timestamp"])
    iid = pd.DataFrame({c: rng.normal(values[c].mean(), values[c].std(), len(synthetic)) for c in values})
    iid.insert(0, "sequence_id", synthetic["sequence_id"].to_numpy())
    continuous = {c: "continuous" for c in bundle.schema.names("continuous")}
    model_report = diagnose(reference[["sequence_id", *continuous]], synthetic[["sequence_id", *continuous]], continuous)
    iid_report = diagnose(reference[["sequence_id", *continuous]], iid[["sequence_id", *continuous]], continuous)
    assert model_report.summary.ks_mean < iid_report.summary.ks_mean
    assert model_report.summary.acf_abs_error_mean < iid_report.summary.acf_abs_error_mean / 2


def test_discrete_values_are_valid_and_constants_exact(trained):
    bundle = trained[0]
    synthetic = generate(bundle, 64, seq_len=30, seed=1)
    for name in bundle.schema.names("discrete"):
        assert set(synthetic[name].unique()) <= {0, 1}
        assert synthetic[name].dtype == np.int64
    assert (synthetic["PLANT_ID"] == 7).all()
    for k in (1, 2, 3):  # the couplings seen in every training row hold in every generated row
        assert ((synthetic[f"F_PUMP{k}"] == 0) == (synthetic[f"S_PUMP{k}"] == 0)).all()
    # So do the junction pressures' ranges per pump state (the plant's pressures follow its pumps).
    assert {(r.continuous, r.discrete) for r in bundle.schema.range_couplings} == {
        ("P_J1", "S_PUMP1"),
        ("P_J2", "S_PUMP2"),
    }
    for coupling in bundle.schema.range_couplings:
        for state, low, high in zip(coupling.states, coupling.lows, coupling.highs, strict=True):
            at_state = synthetic[coupling.discrete] == state
            assert synthetic.loc[at_state, coupling.continuous].between(low, high).all()
    for name in bundle.schema.names("continuous"):
        spec = bundle.schema.feature(name)
        assert synthetic[name].between(spec.min, spec.max).all()


def test_long_format_layout(trained):
    bundle = trained[0]
    synthetic = generate(bundle, 3, seq_len=5, seed=0)
    assert list(synthetic.columns[:3]) == ["sequence_id", "step", "timestamp"]
    assert list(synthetic.columns[3:]) == bundle.schema.names()
    assert synthetic["sequence_id"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    # Each sequence runs hour by hour from the phase of the week it was generated at, placed in the data's
    # first week (the demo plant starts 2024-01-01 00:00).
    stamps = pd.to_datetime(synthetic["timestamp"]).to_numpy().reshape(3, 5)
    assert (np.diff(stamps, axis=1) == np.timedelta64(1, "h")).all()
    first = pd.to_datetime(stamps[:, 0])
    assert (first >= pd.Timestamp("2024-01-01")).all() and (first < pd.Timestamp("2024-01-08")).all()


def test_same_seed_same_output_other_seed_other_output(trained):
    bundle = trained[0]
    first = generate(bundle, 8, seed=42)
    assert first.equals(generate(bundle, 8, seed=42))
    assert not first.equals(generate(bundle, 8, seed=43))
    assert generate(bundle, 8, seed=42, sampler="ddpm").equals(generate(bundle, 8, seed=42, sampler="ddpm"))


def test_chunks_cover_all_sequences_with_global_ids(trained):
    chunks = list(iter_generate(trained[0], 10, seed=3, chunk_sequences=4))
    assert [c["sequence_id"].nunique() for c in chunks] == [4, 4, 2]
    assert pd.concat(chunks)["sequence_id"].tolist() == list(np.repeat(np.arange(10), 24))


def test_long_sequences_show_no_seams_in_lag1(trained):
    """Chained windows: the lag-1 ACF at window seams matches the one inside windows."""
    bundle = trained[0]
    synthetic = generate(bundle, 60, seq_len=96, seed=7)
    window = bundle.config.window.seq_len
    for name in ("L_T1", "L_T2", "F_DEMAND"):
        values = synthetic[name].to_numpy().reshape(60, 96)
        steps = np.abs(np.diff(values, axis=1))
        seams = [s - 1 for s in range(window, 96, window // 2)]
        at_seams = steps[:, seams].mean()
        elsewhere = np.delete(steps, seams, axis=1).mean()
        assert at_seams < 1.5 * elsewhere, name


def test_reload_gives_identical_samples(trained, saved):
    loaded = load_bundle(saved)
    assert generate(trained[0], 6, seed=9).equals(generate(loaded, 6, seed=9))
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and "denoiser_ema.safetensors" in manifest["files"]


def test_a_bundle_saved_before_range_couplings_still_loads_and_generates(saved, tmp_path):
    """Format-3 bundles from before range couplings have no such key in schema.json: they load with
    none, and generation keeps their other couplings."""
    old = tmp_path / "old"
    shutil.copytree(saved, old)
    schema = json.loads((old / "schema.json").read_text())
    assert schema.pop("range_couplings")
    (old / "schema.json").write_text(json.dumps(schema))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["files"]["schema.json"] = hashlib.sha256((old / "schema.json").read_bytes()).hexdigest()
    (old / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_bundle(old)
    assert loaded.schema.range_couplings == [] and loaded.schema.couplings
    synthetic = generate(loaded, 8, seed=2)
    assert ((synthetic["F_PUMP1"] == 0) == (synthetic["S_PUMP1"] == 0)).all()


def test_a_bundle_saved_before_state_lead_and_strength_loads_as_it_was_made(saved, tmp_path):
    """Format-5 bundles from before ``trend.state_lead``, ``sampling.strength``,
    ``sampling.follow_couplings``, ``sampling.avoid_replay`` and ``trend.swap_innovations`` have none of these
    keys in config.json, nor the lead weight, nor the pool's rows: they load with all of them off, not with
    today's defaults."""
    old = tmp_path / "old"
    shutil.copytree(saved, old)
    config = json.loads((old / "config.json").read_text())
    assert config["trend"].pop("state_lead") and config["sampling"].pop("strength") < 1
    assert config["sampling"].pop("follow_couplings") and config["sampling"].pop("avoid_replay")
    assert config["trend"].pop("swap_innovations") > 0
    (old / "config.json").write_text(json.dumps(config))
    weights = load_file(str(old / "trend.safetensors"))
    del weights["state_lead.weight"]
    save_file(weights, str(old / "trend.safetensors"))
    with np.load(old / "pools.npz") as arrays:
        pools = {name: arrays[name] for name in arrays.files if not name.endswith("_rows")}
    assert len(pools) == 9
    with open(old / "pools.npz", "wb") as handle:
        np.savez(handle, **pools)
    manifest = json.loads((old / "manifest.json").read_text())
    for name in ("config.json", "trend.safetensors", "pools.npz"):
        manifest["files"][name] = hashlib.sha256((old / name).read_bytes()).hexdigest()
    (old / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_bundle(old)
    assert loaded.trend is not None and loaded.trend.state_lead is None
    assert loaded.config.trend.state_lead is False and loaded.config.sampling.strength == 1.0
    assert loaded.config.sampling.follow_couplings is False and loaded.config.sampling.avoid_replay is False
    assert loaded.config.trend.swap_innovations == 0.0  # trained before it existed: plain teacher forcing
    assert loaded.pools.residual_rows is None and loaded.pools.context_rows is None
    synthetic = generate(loaded, 8, seed=2)
    assert ((synthetic["F_PUMP1"] == 0) == (synthetic["S_PUMP1"] == 0)).all()


def test_save_refuses_to_overwrite_and_leaves_no_temporary_files(trained, saved):
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(trained[0], saved)
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]


def test_corrupted_missing_or_foreign_bundles_are_refused(saved, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    with open(broken / "denoiser_ema.safetensors", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(BundleError, match="denoiser_ema.safetensors is corrupted"):
        load_bundle(broken)
    (broken / "trend.safetensors").unlink()
    with pytest.raises(BundleError, match="trend.safetensors is missing"):
        load_bundle(broken)
    (broken / "manifest.json").write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(broken)
    future = tmp_path / "future"
    shutil.copytree(saved, future)
    manifest = json.loads((future / "manifest.json").read_text())
    manifest["format_version"] = 99
    (future / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format 99 is not supported"):
        load_bundle(future)


def test_cancellation_stops_training(plant):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(TrainingCancelled):
        train(plant, TSSynthConfig().with_overrides(TINY), should_stop=stop)


def test_a_table_without_continuous_features_is_refused_before_training(plant):
    states = plant[["timestamp", *[c for c in plant.columns if c.startswith("S_")]]]
    with pytest.raises(DataError, match="nothing to model: no continuous column .*'S_PUMP1': 'discrete'"):
        train(states, TSSynthConfig().with_overrides(TINY))


@pytest.mark.parametrize(
    "overrides",
    [
        {"trend": {"enabled": False}},
        {"diffusion": {"backbone_type": "transformer"}},
        {"transform": {"normalization": "standard", "bounds": "sigmoid"}},
    ],
    ids=["one-stage", "transformer-backbone", "standard-sigmoid"],
)
def test_variants_train_and_generate(plant, overrides):
    quick = TSSynthConfig().with_overrides(TINY).with_overrides({"training": {"max_steps": 20}, "trend": {"epochs": 1}})
    bundle = train(plant.iloc[:600], quick.with_overrides(overrides))
    synthetic = generate(bundle, 4, seed=0)
    assert len(synthetic) == 4 * 24 and synthetic["S_PUMP1"].isin([0, 1]).all()
    assert (bundle.trend is None) == (overrides == {"trend": {"enabled": False}})


def test_trend_rollouts_are_diverse_and_seeded(trained):
    trend = trained[0].trend
    assert isinstance(trend, TemporalGRUGenerator)
    pools = trained[0].pools
    context = torch.as_tensor(pools.contexts[:1], dtype=torch.float32).expand(50, -1, -1)
    context_tokens = torch.as_tensor(pools.context_tokens[:1]).expand(50, -1, -1)
    innovations = InnovationPool(
        torch.as_tensor(pools.residual_trends),
        torch.as_tensor(pools.residuals),
        trained[0].config.trend.innovation_neighbours,
        torch.as_tensor(pools.residual_states),
        trend.n_categories,
    )
    calendar = rollout_calendar(trained[0], pools.context_times[:1].repeat(50, axis=0), 24)
    first, _, first_states = trend.rollout(context, context_tokens, 24, innovations, torch.Generator().manual_seed(0), calendar)
    again, _, again_states = trend.rollout(context, context_tokens, 24, innovations, torch.Generator().manual_seed(0), calendar)
    assert torch.equal(first, again) and torch.equal(first_states, again_states)
    # Fifty rollouts from one context spread out instead of collapsing onto one path.
    assert float(first[:, -1].std(0).mean()) > 0.1 * float(torch.as_tensor(pools.contexts).std())


def test_rollout_trend_is_the_window_trend_of_its_own_path(trained):
    # Generation conditions the denoiser on exactly what training computed from real windows: each
    # step's trend and the step after, predicted from the path the rollout took.
    bundle = trained[0]
    assert bundle.trend is not None
    context = torch.as_tensor(bundle.pools.contexts[:4], dtype=torch.float32)
    context_tokens = torch.as_tensor(bundle.pools.context_tokens[:4])
    innovations = InnovationPool(torch.as_tensor(bundle.pools.residual_trends), torch.as_tensor(bundle.pools.residuals), 0)
    calendar = rollout_calendar(bundle, bundle.pools.context_times[:4], 10)
    trend, path, states = bundle.trend.rollout(context, context_tokens, 10, innovations, torch.Generator().manual_seed(0), calendar)
    assert trend.shape == (4, 11, context.shape[-1]) and path.shape == (4, 10, context.shape[-1])
    assert states.shape == (4, 10, len(bundle.transforms.discrete))
    with torch.no_grad():
        assert torch.allclose(bundle.trend.window_trend(context, path, context_tokens, states, calendar), trend, atol=1e-5)


def test_the_trend_reads_the_states_of_the_step_it_predicts(trained, plant):
    # The pressure at a pump's discharge steps in the hour the pump switches: the history cannot foresee
    # that, the new state tells it (trend.state_lead, on by default).
    bundle = trained[0]
    assert bundle.trend is not None and bundle.trend.state_lead is not None
    table = prepare_table(plant, bundle.config.data, bundle.config.window.seq_len)
    continuous, discrete = bundle.transforms.transform(table.values)
    x, tokens = torch.as_tensor(continuous, dtype=torch.float32), torch.as_tensor(discrete)
    times = epoch_seconds(table.timestamps)
    calendar = torch.as_tensor(calendar_features(times, trend_calendar_periods(bundle.config, table.schema)))
    pressure = bundle.transforms.continuous.index("P_J1")
    pump = bundle.transforms.discrete.index("S_PUMP1")
    switches = torch.nonzero(tokens[1:, pump] != tokens[:-1, pump])[:, 0]
    assert len(switches) >= 10

    def pressure_error(next_tokens: torch.Tensor) -> float:
        with torch.no_grad():
            predictions, _, _ = bundle.trend(x[None, :-1], tokens[None, :-1], calendar=calendar[None, :-1], next_tokens=next_tokens[None])
        return float((predictions[0, switches, pressure] - x[switches + 1, pressure]).abs().mean())

    jump = float((x[switches + 1, pressure] - x[switches, pressure]).abs().mean())
    told = pressure_error(tokens[1:])
    # The same history with the states of the step withheld (the rows' own states repeated).
    withheld = pressure_error(tokens[:-1])
    assert told < 0.7 * withheld and told < 0.4 * jump, (told, withheld, jump)


def _stage_one_rollout(bundle, n: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rollout path and states ``sample_model_space`` draws with this seed (same draws, same order)."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(bundle.pools.contexts), (n,), generator=generator).numpy()
    innovations = innovation_pool(bundle)
    context = torch.as_tensor(bundle.pools.contexts[picks], dtype=torch.float32)
    calendar = rollout_calendar(bundle, bundle.pools.context_times[picks], length)
    rows = torch.as_tensor(bundle.pools.context_rows[picks]) if innovations.rows is not None else None
    _, path, states = bundle.trend.rollout(
        context, torch.as_tensor(bundle.pools.context_tokens[picks]), length, innovations, generator, calendar, rows
    )
    return path, states


@pytest.mark.parametrize("length", [24, 60])
def test_a_low_strength_keeps_the_output_near_the_rollout_path(trained, length):
    # SDEdit: by default the reverse diffusion starts from the rollout's own residual, noised to 10 % of
    # the schedule.
    bundle = trained[0]
    assert bundle.config.sampling.strength == 0.1
    path, _ = _stage_one_rollout(bundle, 16, length, seed=5)
    near, _, _ = sample_model_space(bundle, 16, length, torch.Generator().manual_seed(5))
    from_noise = bundle.with_sampling(strength=1.0)
    far, _, _ = sample_model_space(from_noise, 16, length, torch.Generator().manual_seed(5))
    near_gap, far_gap = (float(np.abs(out - path.numpy()).mean()) for out in (near, far))
    assert near_gap < 0.5 * far_gap, (near_gap, far_gap)


def test_choose_strength_keeps_the_strength_the_classifier_tells_apart_less(plant, monkeypatch, tmp_path):
    # A shorter classifier than the real one (2000 iterations on 2048 windows): the test checks the wiring.
    monkeypatch.setattr(train_module, "STRENGTH_CHOICE_ITERATIONS", 150)
    monkeypatch.setattr(train_module, "STRENGTH_CHOICE_WINDOWS", 256)
    events: list[Progress] = []
    config = TSSynthConfig().with_overrides(TINY).with_overrides({"training": {"choose_strength": True}})
    bundle = train(plant, config, progress=events.append)
    choice = bundle.manifest["strength_choice"]
    assert choice["candidates"] == [0.1, 1.0] and choice["windows"] == 256
    # The denoiser left the choice its time within training.max_minutes.
    assert choice["reserved_seconds"] > 0
    gaps = choice["discrimination_gaps"]
    assert all(0 <= gap <= 0.5 for gap in gaps)
    expected = 1.0 if gaps[1] < gaps[0] - choice["margin"] else 0.1
    assert choice["chosen"] == expected == bundle.config.sampling.strength
    stages = [e.stage for e in events]
    assert stages.index("choose_strength") > stages.index("diffusion") and stages[-1] == "validate"
    loaded = load_bundle(save_bundle(bundle, tmp_path / "chosen"))
    assert loaded.config.sampling.strength == choice["chosen"]


def test_pure_noise_must_score_clearly_lower_to_replace_the_configured_strength():
    margin = train_module.STRENGTH_CHOICE_MARGIN
    assert train_module._pick_strength(0.1, 0.30, 0.30 - 2 * margin) == 1.0
    # A tie within one classifier run's spread keeps the configured start, which generates faster.
    assert train_module._pick_strength(0.1, 0.30, 0.30 - margin / 2) == 0.1
    assert train_module._pick_strength(0.1, 0.30, 0.35) == 0.1


def test_validation_blocks_are_spread_over_the_series_and_never_train():
    # One block at the end kept the newest regime out of training; blocks spread over time do not.
    config = TSSynthConfig()
    seq_len = config.window.seq_len
    segments = [(0, 6000), (6000, 6100), (6100, 8761)]
    train_segments, val_segments = split_by_time(segments, config)
    train_rows, val_rows = (np.concatenate([np.arange(a, b) for a, b in spans]) for spans in (train_segments, val_segments))
    assert not np.intersect1d(train_rows, val_rows).size
    assert abs(len(val_rows) - 0.1 * 8761) <= 2 * seq_len
    # Every tenth of the series holds validation rows and training rows.
    tenths = np.linspace(0, 8761, 11)
    assert (np.histogram(val_rows, tenths)[0] > 0).all() and (np.histogram(train_rows, tenths)[0] > 0).all()
    # No piece crosses a segment boundary or is too short for a window.
    for a, b in train_segments + val_segments:
        assert b - a >= seq_len and any(s <= a and b <= e for s, e in segments)
    # Too little data for a validation window, or val_fraction 0: everything trains.
    assert split_by_time([(0, 200)], config) == ([(0, 200)], [])
    no_validation = TSSynthConfig.model_validate({"training": {"val_fraction": 0.0}})
    assert split_by_time(segments, no_validation) == (segments, [])


def test_the_innovation_pool_holds_every_training_row_once(trained, plant):
    # Overlapping windows hold each row up to 24 times. A pool that repeats a row makes its two nearest
    # trends one real moment (replay); one that samples rows leaves a rare pump's few hours out by chance.
    bundle = trained[0]
    config = bundle.config
    table = prepare_table(plant, config.data, config.window.seq_len)
    train_segments, _ = split_by_time(table.segments, config)
    starts = window_starts(train_segments, config.window.seq_len, config.window.stride)
    training_rows = np.unique(starts[:, None] + np.arange(config.window.seq_len))
    x, _ = bundle.transforms.transform(table.values)
    # trend + residual is the data row the residual was measured at, whichever window it came from.
    pooled = bundle.pools.residual_trends + bundle.pools.residuals
    distances = np.linalg.norm(pooled[:, None, :] - x[None, training_rows, :], axis=-1)
    assert float(distances.min(axis=1).max()) < 1e-4
    assert sorted(training_rows[distances.argmin(axis=1)].tolist()) == training_rows.tolist()
    # The rows the pool records are those rows, and each context's last row is where the context ends.
    assert (bundle.pools.residual_rows == training_rows[distances.argmin(axis=1)]).all()
    assert np.allclose(bundle.pools.contexts[:, -1], x[bundle.pools.context_rows], atol=1e-6)


def test_an_innovation_never_continues_the_real_row_it_follows():
    # Row i of the series had trend i and residual i. A rollout at trend 5 after row 4 (a real moment) would
    # take row 5's residual, the real continuation: it takes the nearest other row's instead.
    trends = torch.arange(10.0)[:, None]
    pool = InnovationPool(trends, trends.clone(), 1, rows=torch.arange(10))
    generator = torch.Generator().manual_seed(0)
    query = torch.full((50, 1), 5.0)
    innovation, rows = pool.pick(query, generator)
    assert bool((innovation == 5.0).all()) and bool((rows == 5).all())
    innovation, rows = pool.pick(query, generator, after=torch.full((50,), 4))
    assert bool(((rows == 4) | (rows == 6)).all()) and bool((innovation == rows[:, None].float()).all())
    # After another row, row 5 is allowed again.
    assert bool((pool.pick(query, generator, after=torch.full((50,), 7))[1] == 5).all())


def test_a_rollout_avoiding_replay_does_not_trace_the_real_series(trained, plant):
    # With one neighbour, the nearest trend of a rollout that starts from a real context is the real next
    # row, and its residual reproduces that row; step after step the rollout traces the training data.
    bundle = trained[0]
    x, _ = bundle.transforms.transform(prepare_table(plant, bundle.config.data, bundle.config.window.seq_len).values)
    steps = 6

    def traced_share(avoid: bool) -> float:
        overrides = {"trend": {"innovation_neighbours": 1}, "sampling": {"avoid_replay": avoid}}
        settings = replace(bundle, config=bundle.config.with_overrides(overrides))
        generator = torch.Generator().manual_seed(4)
        picks = torch.randint(0, len(bundle.pools.contexts), (200,), generator=generator).numpy()
        path, _ = _stage_one_rollout(settings, 200, steps, seed=4)
        real_next = x[bundle.pools.context_rows[picks][:, None] + np.arange(1, steps + 1)]
        return float((np.abs(path.numpy() - real_next).max(axis=-1) < 1e-3).mean())

    assert traced_share(avoid=False) > 0.2
    assert traced_share(avoid=True) < 0.02


def test_innovations_come_from_the_nearest_trends():
    # Two regimes: residuals seen at trend -5 are small, at trend +5 large.
    trends = torch.cat([torch.full((100, 1), -5.0), torch.full((100, 1), 5.0)]) + 0.01 * torch.randn(200, 1)
    residuals = torch.cat([torch.full((100, 1), 0.1), torch.full((100, 1), 3.0)])
    generator = torch.Generator().manual_seed(0)
    local = InnovationPool(trends, residuals, neighbours=8)
    assert bool((local.draw(torch.full((500, 1), -4.0), generator) == 0.1).all())
    assert bool((local.draw(torch.full((500, 1), 4.0), generator) == 3.0).all())
    # neighbours=0 is the plain bootstrap: both regimes appear whatever the trend.
    anywhere = InnovationPool(trends, residuals, neighbours=0).draw(torch.full((500, 1), -4.0), generator)
    assert 0.3 < float((anywhere == 3.0).float().mean()) < 0.7


def test_innovations_come_from_rows_in_the_current_states_first():
    # The nearest trends were seen with the pump off (residual 0), rows a little further with it on (residual
    # 1): a rollout that has just sampled "on" gets the innovations of a running pump.
    trends = torch.cat([torch.zeros(50, 1), torch.full((50, 1), 0.5)])
    residuals = torch.cat([torch.zeros(50, 1), torch.ones(50, 1)])
    states = torch.cat([torch.zeros(50, 1, dtype=torch.long), torch.ones(50, 1, dtype=torch.long)])
    pool = InnovationPool(trends, residuals, 4, states, [2])
    generator = torch.Generator().manual_seed(0)
    query = torch.zeros(200, 1)
    assert bool((pool.draw(query, generator, torch.ones(200, 1, dtype=torch.long)) == 1.0).all())
    assert bool((pool.draw(query, generator, torch.zeros(200, 1, dtype=torch.long)) == 0.0).all())
    # A state combination the pool lacks falls back to the nearest trends among the closest combinations.
    two_features = InnovationPool(trends, residuals, 4, torch.cat([states, torch.zeros(100, 1, dtype=torch.long)], 1), [2, 2])
    unseen = torch.tensor([[1, 1]]).expand(200, -1)
    assert bool((two_features.draw(query, generator, unseen) == 1.0).all())


def test_bounded_draws_keep_each_row_inside_what_its_state_allows():
    # One feature at trend 0 with innovations spread over [-1, 1]. State 0 allows (-inf, 0], state 1
    # [0.5, inf), as a flow's zero and its running range would.
    trends = torch.zeros(400, 1)
    residuals = torch.linspace(-1.0, 1.0, 400)[:, None]
    states = torch.randint(0, 2, (400, 1), generator=torch.Generator().manual_seed(0))
    bounds = (torch.tensor([[-torch.inf], [0.5]]), torch.tensor([[0.0], [torch.inf]]))
    generator = torch.Generator().manual_seed(1)
    query, on, off = torch.zeros(300, 1), torch.ones(300, 1, dtype=torch.long), torch.zeros(300, 1, dtype=torch.long)
    for neighbours in (0, 400):  # the plain bootstrap and the nearest rows
        pool = InnovationPool(trends, residuals, neighbours, states, [2], bounds)
        assert bool((pool.draw(query, generator, off) <= 0.0).all())
        running = pool.draw(query, generator, on)
        assert bool((running >= 0.5).all())
        # Among the candidates, one that fits (bar the rare step where none does): still real innovations,
        # spread over what is allowed, not heaped on its edge.
        assert float(torch.isin(running, residuals).float().mean()) > 0.95 and float(running.std()) > 0.1
    unbounded = InnovationPool(trends, residuals, 400, states, [2]).draw(query, generator, on)
    assert float((unbounded < 0.5).float().mean()) > 0.5
    # No candidate reaches [5, inf): the row goes to the nearest allowed value.
    far = InnovationPool(trends, residuals, 8, states, [2], (torch.tensor([[-torch.inf], [5.0]]), torch.tensor([[0.0], [torch.inf]])))
    assert bool((far.draw(query, generator, on) == 5.0).all())


def test_following_the_couplings_leaves_the_output_repair_nothing_to_do(trained):
    bundle = trained[0]
    assert bundle.schema.couplings and bundle.schema.range_couplings

    def repaired_share(follow: bool) -> float:
        settings = bundle.with_sampling(follow_couplings=follow)
        continuous, discrete, _ = sample_model_space(settings, 64, 24, torch.Generator().manual_seed(3))
        table = bundle.transforms.inverse(continuous.reshape(64 * 24, -1), discrete.reshape(64 * 24, -1), rounded=True)
        fixed = apply_couplings(table.copy(), bundle.schema.couplings, 24, np.random.default_rng(0), bundle.schema.range_couplings)
        return float((fixed != table).to_numpy().mean())

    assert repaired_share(follow=False) > 0.002
    assert repaired_share(follow=True) == 0.0


def test_stage_1_reads_rows_whose_innovation_is_another_rows():
    torch.manual_seed(0)
    model = TemporalGRUGenerator(3, 8, 1, [2]).eval()
    series, states = torch.randn(64, 30, 3), torch.randint(0, 2, (64, 30, 1))
    calendar = torch.zeros(64, 29, 0)
    with torch.no_grad():
        predictions, _, _ = model(series[:, :-1], states[:, :-1], next_tokens=states[:, 1:])
    residuals = (series[:, 1:] - predictions).reshape(-1, 3)

    def read(share: float, keep: int) -> torch.Tensor:
        return swapped_innovations(model, series, states, calendar, share, keep, torch.Generator().manual_seed(1))

    assert torch.equal(read(0.0, 5), series[:, :-1])
    rows = read(0.5, 5)
    assert rows.shape == (64, 29, 3)
    assert torch.equal(rows[:, :6], series[:, :6])  # the start of each span stays real
    changed = ~torch.isclose(rows[:, 6:], series[:, 6:-1]).all(dim=-1)
    assert 0.4 < float(changed.float().mean()) < 0.6
    # Each swapped row is the model's prediction of it plus the residual of some row of the batch.
    innovations = (rows[:, 6:] - predictions[:, 5:-1])[changed]
    nearest = (innovations[:, None] - residuals[None]).abs().amax(dim=-1).min(dim=1).values
    assert float(nearest.max()) < 1e-5


def test_state_transitions_start_from_the_counted_markov_chain():
    # A rare pump: on in 4 rows of 2000, in two 2-hour runs, so "on" stays on half the time.
    pump = torch.zeros(2000, dtype=torch.long)
    pump[[500, 501, 1500, 1501]] = 1
    valve = torch.arange(2000) // 100 % 2  # switches every 100 rows
    tokens = torch.stack([pump, valve], dim=1)
    model = TemporalGRUGenerator(1, 8, 1, [2, 2])
    model.start_from_counts(tokens[:-1], tokens[1:])
    with torch.no_grad():
        model.state_head.weight.zero_()
        model.state_head.bias.zero_()
        _, logits, _ = model(torch.zeros(4, 1, 1), torch.tensor([[[1, 0]], [[0, 0]], [[0, 1]], [[1, 1]]]))
    stay_on, turn_on = logits[0, 0, :2].softmax(-1)[1], logits[1, 0, :2].softmax(-1)[1]
    assert abs(float(stay_on) - 3 / 6) < 1e-5  # 2 of 4 on-rows stay on, add-one smoothed: (2+1)/(4+2)
    assert abs(float(turn_on) - 3 / 1997) < 1e-6
    # Each feature's own chain only: the pump's state does not move the valve's logits.
    assert torch.allclose(logits[2, 0, 2:], logits[3, 0, 2:]) and float(logits[2, 0, 2:].softmax(-1)[1]) > 0.98


def test_generated_states_are_the_states_stage_1_sampled(trained):
    # The denoiser holds stage 1's states and fills in the continuous residual given them.
    bundle = trained[0]
    assert bundle.trend is not None and bundle.trend.n_categories == bundle.transforms.n_categories
    _, tokens, _ = sample_model_space(bundle, 16, 30, torch.Generator().manual_seed(3))
    _, states = _stage_one_rollout(bundle, 16, 30, seed=3)
    assert np.array_equal(tokens, states.numpy())
    assert len(np.unique(tokens[..., 0])) > 1


def test_a_spent_time_budget_shortens_the_denoiser_run_and_says_so(plant):
    """A budget already used up by the earlier stages leaves the denoiser its minimum: one validation
    interval, annealed and validated, instead of max_steps."""
    config = TSSynthConfig().with_overrides(TINY).with_overrides(
        {"training": {"max_steps": 100_000, "eval_every": 20, "max_minutes": 1e-6}, "trend": {"epochs": 1}}
    )
    events: list[Progress] = []
    bundle = train(plant, config, progress=events.append)
    training = bundle.manifest["training"]
    assert training["stopped_by"] == "time_budget"
    assert training["steps"] == training["planned_steps"] == 20 and len(training["val_losses"]) == 1
    assert [e.total for e in events if e.stage == "diffusion"][-1] == 20
    assert generate(bundle, 3, seed=0).notna().all().all()


def test_an_ample_time_budget_changes_nothing(trained, plant):
    """Same seed, budget that never binds: bit-identical weights to the run without a budget."""
    bundle = trained[0]
    assert bundle.manifest["training"]["stopped_by"] in ("max_steps", "early_stopping")
    unbounded = train(plant, TSSynthConfig().with_overrides(TINY).with_overrides({"training": {"max_minutes": None}}))
    for name, tensor in bundle.ema.state_dict().items():
        assert torch.equal(tensor, unbounded.ema.state_dict()[name]), name


def test_steps_within_budget_adds_what_the_pace_allows_between_the_bounds():
    # 250 steps done at 0.08 s each, 400 s left: 5000 more fit.
    assert steps_within_budget(250, 0.08, 400.0, max_steps=7000, min_steps=250) == 5250
    assert steps_within_budget(250, 0.08, 4000.0, max_steps=7000, min_steps=250) == 7000
    assert steps_within_budget(300, 0.08, -5.0, max_steps=7000, min_steps=250) == 300
    assert steps_within_budget(10, 0.08, -5.0, max_steps=7000, min_steps=250) == 250
    assert steps_within_budget(10, 0.08, -5.0, max_steps=100, min_steps=250) == 100
