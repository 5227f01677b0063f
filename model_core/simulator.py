"""A small deterministic water-distribution plant: the project's built-in demo dataset.

Why a simulator instead of a shipped CSV: the demo must exist offline, at any length, and with
known ground truth, so tests can assert physical facts (a pump's flow is exactly zero while it is
off, levels stay inside their tanks) that a learned model is expected to reproduce.

The plant, in hourly-ish mass balance (levels in m, flows in m3/h, pressures in bar):

* pump 1 lifts water from a well into tank 1;
* pump 2 transfers tank 1 -> tank 2, pump 3 transfers tank 2 -> tank 3;
* a scheduled gravity valve feeds tank 3 from tank 1 during the day;
* each tank supplies a demand zone whose draw follows a daily cycle plus autocorrelated noise.

Every pump is switched by its tank's level with hysteresis, so the states alternate in long runs
(the regime structure that makes ICS series hard to synthesise), and the pressures follow them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

#: Value of the constant tag column: the kind of column a model must restore verbatim.
PLANT_ID = 7


@dataclass(frozen=True)
class _Tank:
    area_m2: float
    height_m: float
    #: Level below which the filling pump starts and above which it stops (hysteresis band).
    start_below_m: float
    stop_above_m: float


@dataclass(frozen=True)
class _Pump:
    nominal_m3h: float
    #: Relative flow lost per metre of level in the tank it pushes into (higher head, less flow).
    head_loss_per_m: float
    #: Pressure the running pump adds at its discharge junction.
    head_bar: float


_TANKS = (
    _Tank(area_m2=140.0, height_m=6.0, start_below_m=1.8, stop_above_m=4.4),
    _Tank(area_m2=80.0, height_m=5.0, start_below_m=1.5, stop_above_m=3.8),
    _Tank(area_m2=60.0, height_m=4.5, start_below_m=1.0, stop_above_m=3.2),
)
_PUMPS = (
    _Pump(nominal_m3h=165.0, head_loss_per_m=0.03, head_bar=3.6),
    _Pump(nominal_m3h=125.0, head_loss_per_m=0.04, head_bar=2.7),
    _Pump(nominal_m3h=70.0, head_loss_per_m=0.05, head_bar=2.1),
)
#: Mean draw of the three demand zones (m3/h).
_ZONE_DEMAND_M3H = np.array([32.0, 24.0, 30.0])
#: Gravity valve: flow = coefficient * sqrt(level of tank 1); open 06:00-22:00 while tank 1 holds water.
_VALVE_COEFF = 9.0
_VALVE_HOURS = (6.0, 22.0)
_VALVE_MIN_LEVEL_M = 1.0
#: Tank 1 must hold this much before pump 2 may draw from it (dry-run protection).
_DRY_RUN_LEVEL_M = 0.4
_LEVEL_NOISE_M = 0.01
_FLOW_NOISE_REL = 0.02
_PRESSURE_NOISE_BAR = 0.04


def simulate_plant(
    rows: int = 4000, seed: int = 0, start: str = "2024-01-01 00:00:00", freq_minutes: int = 60
) -> pd.DataFrame:
    """Simulate ``rows`` samples, one every ``freq_minutes``; identical output for identical arguments."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if freq_minutes < 1:
        raise ValueError(f"freq_minutes must be at least 1, got {freq_minutes}")
    rng = np.random.default_rng(seed)
    stamps = pd.date_range(pd.Timestamp(start), periods=rows, freq=pd.Timedelta(minutes=freq_minutes))
    hour = (stamps - stamps.normalize()).total_seconds().to_numpy() / 3600.0
    dt_h = freq_minutes / 60.0

    # All randomness is drawn up front, in a fixed order, so the loop below is pure arithmetic.
    demand = _zone_demand(hour, dt_h, rng)
    flow_noise = 1.0 + _FLOW_NOISE_REL * rng.standard_normal((rows, 3))
    level_noise = _LEVEL_NOISE_M * rng.standard_normal((rows, 3))
    pressure_noise = _PRESSURE_NOISE_BAR * rng.standard_normal((rows, 2))
    level = np.array([rng.uniform(t.start_below_m, t.stop_above_m) for t in _TANKS])
    running = rng.integers(0, 2, size=3).astype(bool)
    valve_scheduled = (hour >= _VALVE_HOURS[0]) & (hour < _VALVE_HOURS[1])

    levels = np.empty((rows, 3))
    states = np.empty((rows, 3), dtype=np.int64)
    flows = np.zeros((rows, 3))
    valve = np.empty(rows, dtype=np.int64)
    area = np.array([t.area_m2 for t in _TANKS])
    height = np.array([t.height_m for t in _TANKS])
    for i in range(rows):
        running = _switch(running, level)
        valve_open = bool(valve_scheduled[i]) and level[0] > _VALVE_MIN_LEVEL_M
        # Each pump pushes into the tank with the same index; less flow against a fuller tank.
        flow = (
            np.array(
                [
                    p.nominal_m3h * (1.0 - p.head_loss_per_m * level[k]) if running[k] else 0.0
                    for k, p in enumerate(_PUMPS)
                ]
            )
            * flow_noise[i]
        )
        gravity = _VALVE_COEFF * np.sqrt(level[0]) if valve_open else 0.0
        inflow = flow + np.array([0.0, 0.0, gravity])
        outflow = np.array([flow[1] + gravity, flow[2], 0.0]) + demand[i]
        levels[i], states[i], flows[i], valve[i] = level, running, flow, valve_open
        # A dry tank delivers nothing more and a full one overflows: the geometry bounds the level.
        level = np.clip(level + (inflow - outflow) * dt_h / area, 0.0, height)

    measured_level = np.clip(levels + level_noise, 0.0, height)
    pressure = _junction_pressures(levels, states, valve, pressure_noise)
    frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S")})
    for k in range(3):
        frame[f"L_T{k + 1}"] = measured_level[:, k].round(4)
    for k in range(3):
        frame[f"S_PUMP{k + 1}"] = states[:, k]
        frame[f"F_PUMP{k + 1}"] = flows[:, k].round(4)
    frame["S_V1"] = valve
    frame["P_J1"] = pressure[:, 0].round(4)
    frame["P_J2"] = pressure[:, 1].round(4)
    frame["F_DEMAND"] = demand.sum(axis=1).round(4)
    frame["PLANT_ID"] = PLANT_ID
    return frame


def write_demo_csv(path: str | Path, rows: int = 4000, seed: int = 0) -> Path:
    """Write the demo table as CSV (the file the service trains on when no data is given)."""
    path = Path(path)
    simulate_plant(rows=rows, seed=seed).to_csv(path, index=False)
    return path


def _switch(running: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Hysteresis control: start below the band, stop above it, otherwise keep the current state."""
    nxt = running.copy()
    for k, tank in enumerate(_TANKS):
        if level[k] < tank.start_below_m:
            nxt[k] = True
        elif level[k] > tank.stop_above_m:
            nxt[k] = False
    if level[0] < _DRY_RUN_LEVEL_M:
        nxt[1] = False
    return nxt


def _zone_demand(hour: np.ndarray, dt_h: float, rng: np.random.Generator) -> np.ndarray:
    """Daily cycle (morning and evening peaks) times AR(1) noise, per zone; never negative."""
    angle = 2.0 * np.pi * hour / 24.0
    cycle = 1.0 + 0.35 * np.sin(angle - 2.2) + 0.15 * np.sin(2.0 * angle - 0.5)
    # AR(1) with a ~3 h memory whatever the sampling step, so the noise is a process, not jitter.
    phi = float(np.exp(-dt_h / 3.0))
    shocks = rng.standard_normal((len(hour), 3)) * 0.08 * np.sqrt(1.0 - phi**2)
    # Started in its stationary distribution, so the first day looks like every other day.
    initial = phi * shocks[0] / np.sqrt(1.0 - phi**2)
    noise, _ = lfilter([1.0], [1.0, -phi], shocks, axis=0, zi=initial[None, :])
    return np.maximum(_ZONE_DEMAND_M3H * cycle[:, None] * (1.0 + noise), 0.0)


def _junction_pressures(
    levels: np.ndarray, states: np.ndarray, valve: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """Static head of the upstream tank plus the head of whichever pumps run into the junction."""
    heads = np.array([p.head_bar for p in _PUMPS])
    j1 = 0.9 + 0.098 * levels[:, 0] + heads[0] * states[:, 0]
    j2 = 0.6 + 0.098 * levels[:, 1] + heads[1] * states[:, 1] + 0.6 * heads[2] * states[:, 2] - 0.25 * valve
    return np.column_stack([j1, j2]) + noise
