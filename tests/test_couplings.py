from __future__ import annotations

import numpy as np
import pandas as pd

from model_core.couplings import (
    RangeCoupling,
    apply_couplings,
    find_couplings,
    find_range_couplings,
    state_value_ranges,
)
from model_core.simulator import simulate_plant


def test_pump_flow_and_state_couplings_are_found_and_nothing_else():
    plant = simulate_plant(rows=1500, seed=0)
    continuous = ["L_T1", "L_T2", "F_PUMP1", "F_PUMP2", "P_J1"]
    found = find_couplings(plant, continuous, ["S_PUMP1", "S_PUMP2", "S_V1"])
    assert {(c.continuous, c.discrete, c.atom, tuple(c.atom_states)) for c in found} == {
        ("F_PUMP1", "S_PUMP1", 0.0, (0.0,)),
        ("F_PUMP2", "S_PUMP2", 0.0, (0.0,)),
    }
    assert all(c.default_state == 1.0 for c in found)
    for coupling in found:  # the running range: never between 0 and the smallest running flow
        running = plant[coupling.continuous][plant[coupling.continuous] != 0]
        assert (coupling.others_low, coupling.others_high) == (running.min(), running.max()) and running.min() > 0


def test_a_single_counterexample_rules_a_coupling_out():
    rng = np.random.default_rng(0)
    state = rng.integers(0, 2, 500)
    flow = np.where(state == 1, rng.uniform(1, 2, 500), 0.0)
    frame = pd.DataFrame({"flow": flow, "state": state})
    assert len(find_couplings(frame, ["flow"], ["state"])) == 1
    frame.loc[10, ["flow", "state"]] = [0.0, 1]
    frame.loc[11, ["flow", "state"]] = [1.5, 1]
    assert find_couplings(frame, ["flow"], ["state"]) == []


def _pump_coupling(running_range: bool = False):
    """The demo pump's coupling; without its recorded running range unless asked (the tests of the atom
    rule use flows of any size)."""
    plant = simulate_plant(rows=300, seed=1)
    found = find_couplings(plant, ["F_PUMP1"], ["S_PUMP1"])
    return found if running_range else [c.model_copy(update={"others_low": None, "others_high": None}) for c in found]


def test_the_state_leads_and_a_running_pump_keeps_the_flow_of_its_nearest_running_step():
    generated = pd.DataFrame({"F_PUMP1": [0.0, 0.0, 12.5, 3.0, 0.0], "S_PUMP1": [1, 0, 0, 1, 1]})
    fixed = apply_couplings(generated, _pump_coupling(), 5, np.random.default_rng(0))
    assert fixed["S_PUMP1"].tolist() == [1, 0, 0, 1, 1]
    assert fixed["F_PUMP1"].tolist() == [3.0, 0.0, 0.0, 3.0, 3.0]
    assert fixed["S_PUMP1"].dtype == np.int64


def test_fills_stay_inside_their_sequence_and_fall_back_to_the_table():
    # Sequence 0 has no running step with a flow; sequence 1 has one (7.0) and a tie between 7.0 and 9.0.
    generated = pd.DataFrame(
        {"F_PUMP1": [0.0, 0.0, 0.0, 7.0, 0.0, 9.0], "S_PUMP1": [1, 1, 0, 1, 1, 1]}
    )
    fixed = apply_couplings(generated, _pump_coupling(), 3, np.random.default_rng(0))
    assert fixed["F_PUMP1"].tolist()[3:] == [7.0, 7.0, 9.0]
    assert set(fixed["F_PUMP1"].tolist()[:2]) <= {7.0, 9.0}
    assert fixed["F_PUMP1"].tolist()[2] == 0.0


def test_a_running_flow_outside_its_running_range_takes_the_nearest_running_flow_inside_it():
    (coupling,) = _pump_coupling(running_range=True)
    low, high = coupling.others_low, coupling.others_high
    inside = (low + high) / 2
    generated = pd.DataFrame(
        {"F_PUMP1": [inside, 0.5 * low, 0.0, 2 * high, high], "S_PUMP1": [1, 1, 0, 1, 1]}
    )
    fixed = apply_couplings(generated, [coupling], 5, np.random.default_rng(0))
    assert fixed["F_PUMP1"].tolist() == [inside, inside, 0.0, high, high]
    assert fixed["S_PUMP1"].tolist() == [1, 1, 0, 1, 1]


def test_a_table_without_any_flow_turns_the_states_off_instead():
    generated = pd.DataFrame({"F_PUMP1": [0.0, 0.0], "S_PUMP1": [1, 0]})
    fixed = apply_couplings(generated, _pump_coupling(), 2, np.random.default_rng(0))
    assert fixed["S_PUMP1"].tolist() == [0, 0]


def test_shared_features_let_the_value_lead_and_every_coupling_holds():
    rng = np.random.default_rng(3)
    flow = np.where(rng.random(60) < 0.4, 0.0, rng.uniform(1, 5, 60))
    couplings = find_couplings(
        pd.DataFrame({"flow": flow, "a": (flow > 0).astype(int), "b": (flow > 0).astype(int)}), ["flow"], ["a", "b"]
    )
    assert len(couplings) == 2
    generated = pd.DataFrame({"flow": flow, "a": rng.integers(0, 2, 60), "b": rng.integers(0, 2, 60)})
    fixed = apply_couplings(generated.copy(), couplings, 6, rng)
    assert fixed["flow"].tolist() == flow.tolist()
    for state in ("a", "b"):
        assert ((fixed["flow"] == 0) == (fixed[state] == 0)).all()


def _pressure_frame(rng: np.random.Generator, rows: int = 400) -> pd.DataFrame:
    """A pressure that lies in [60, 65] while its pump is off and in [80, 90] while it runs."""
    pump = rng.integers(0, 2, rows)
    pressure = np.where(pump == 1, rng.uniform(80, 90, rows), rng.uniform(60, 65, rows))
    return pd.DataFrame({"pressure": pressure, "level": rng.uniform(0, 5, rows), "pump": pump})


def test_disjoint_per_state_ranges_are_found_and_overlapping_ones_are_not():
    frame = _pressure_frame(np.random.default_rng(0))
    found = find_range_couplings(frame, ["pressure", "level"], ["pump"])
    assert len(found) == 1
    (coupling,) = found
    assert (coupling.continuous, coupling.discrete, coupling.states) == ("pressure", "pump", [0.0, 1.0])
    assert coupling.highs[0] == frame.pressure[frame.pump == 0].max() < coupling.lows[1]
    frame.loc[0, ["pressure", "pump"]] = [70.0, 1]  # one running row at an in-between pressure is fine
    assert len(find_range_couplings(frame, ["pressure"], ["pump"])) == 1
    frame.loc[1, ["pressure", "pump"]] = [85.0, 0]  # one stopped row at a running pressure is not
    assert find_range_couplings(frame, ["pressure"], ["pump"]) == []


def test_a_rare_state_does_not_make_a_range_coupling():
    frame = _pressure_frame(np.random.default_rng(1), rows=1000)
    frame["pump"] = 0
    frame.loc[:4, "pump"] = 1  # 0.5 % of the rows: too few to call it a law
    frame.loc[:4, "pressure"] = 100.0
    assert find_range_couplings(frame, ["pressure"], ["pump"]) == []


def test_out_of_range_values_take_the_nearest_in_range_value_of_their_sequence():
    coupling = RangeCoupling(continuous="p", discrete="s", states=[0, 1], lows=[60, 80], highs=[65, 90])
    # Sequence 0: steps 1 and 3 run at a stopped pressure; sequence 1 has no running value in range.
    generated = pd.DataFrame(
        {"p": [85.0, 62.0, 61.0, 63.0, 64.0, 62.0, 61.0, 63.0], "s": [1, 1, 0, 1, 1, 1, 0, 0]}
    )
    fixed = apply_couplings(generated.copy(), [], 4, np.random.default_rng(0), [coupling])
    assert fixed["s"].tolist() == generated["s"].tolist()
    assert fixed["p"].tolist()[:4] == [85.0, 85.0, 61.0, 85.0]
    # Nothing in sequence 1 fits a running pump: a value drawn from the table inside [80, 90].
    assert fixed["p"].tolist()[4:6] == [85.0, 85.0] and fixed["p"].tolist()[6:] == [61.0, 63.0]


def test_several_range_couplings_of_one_feature_confine_it_to_their_intersection():
    ranges = [
        RangeCoupling(continuous="p", discrete="a", states=[0, 1], lows=[0, 50], highs=[40, 100]),
        RangeCoupling(continuous="p", discrete="b", states=[0, 1], lows=[0, 30], highs=[20, 60]),
    ]
    generated = pd.DataFrame(
        {"p": [55.0, 90.0, 10.0, 45.0], "a": [1, 1, 0, 0], "b": [1, 1, 0, 1]}
    )
    fixed = apply_couplings(generated.copy(), [], 4, np.random.default_rng(0), ranges)
    # a=1, b=1 -> [50, 60]: 90 takes 55 (its nearest in-range neighbour); a=0, b=1 -> [30, 40]: 45 has no
    # neighbour or table value there and goes to the edge, 40.
    assert fixed["p"].tolist() == [55.0, 55.0, 10.0, 40.0]


def test_range_couplings_hold_on_every_row_after_generation_like_fixes():
    rng = np.random.default_rng(5)
    frame = _pressure_frame(rng, rows=240)
    (coupling,) = find_range_couplings(frame, ["pressure"], ["pump"])
    generated = frame.copy()
    generated["pump"] = rng.integers(0, 2, 240)  # states scrambled: many rows now disagree
    fixed = apply_couplings(generated, [], 24, rng, [coupling])
    running = fixed.pump == 1
    assert fixed.pressure[running].between(coupling.lows[1], coupling.highs[1]).all()
    assert fixed.pressure[~running].between(coupling.lows[0], coupling.highs[0]).all()


def test_each_state_allows_what_its_couplings_say_and_nothing_is_bounded_otherwise():
    rng = np.random.default_rng(2)
    frame = _pressure_frame(rng)
    frame["flow"] = np.where(frame.pump == 1, rng.uniform(1, 5, len(frame)), 0.0)
    frame["valve"] = rng.integers(0, 2, len(frame))
    continuous, levels = ["level", "flow", "pressure"], {"pump": [0.0, 1.0], "valve": [0.0, 1.0]}
    atoms = find_couplings(frame, continuous, list(levels))
    ranges = find_range_couplings(frame, continuous, list(levels))
    assert {(c.continuous, c.discrete) for c in atoms} == {("flow", "pump")}
    assert {(c.continuous, c.discrete) for c in ranges} == {("flow", "pump"), ("pressure", "pump")}
    value_range = (frame[continuous].min().to_numpy(), frame[continuous].max().to_numpy())
    low, high = state_value_ranges(atoms, ranges, continuous, value_range, levels)
    # Rows: pump 0, pump 1, valve 0, valve 1. Columns: level, flow, pressure.
    pressure = next(r for r in ranges if r.continuous == "pressure")
    assert low[0].tolist() == [-np.inf, 0.0, pressure.lows[0]] and high[0].tolist() == [np.inf, 0.0, pressure.highs[0]]
    # Running: the flow's running range, the running pressure range.
    assert low[1, 1] == frame.flow[frame.pump == 1].min() and high[1, 1] == frame.flow.max()
    assert (low[1, 2], high[1, 2]) == (pressure.lows[1], pressure.highs[1])
    assert np.isneginf(low[2:]).all() and np.isposinf(high[2:]).all() and np.isneginf(low[:, 0]).all()
    # A schema saved before the running range was recorded: anything above the atom.
    recorded_before = [c.model_copy(update={"others_low": None, "others_high": None}) for c in atoms]
    old_low, old_high = state_value_ranges(recorded_before, [], continuous, value_range, levels)
    assert old_low[1, 1] == np.nextafter(0.0, 1.0) and np.isposinf(old_high[1, 1])


def test_an_atom_inside_the_range_bounds_by_the_other_rows_range_and_a_shared_feature_bounds_nothing():
    frame = pd.DataFrame({"x": [-1.0, 0.0, 0.0, 2.0], "s": [1, 0, 0, 1], "t": [1, 0, 0, 1]})
    inside = find_couplings(frame, ["x"], ["s"])
    low, high = state_value_ranges(inside, [], ["x"], (np.array([-1.0]), np.array([2.0])), {"s": [0.0, 1.0]})
    assert low.tolist() == [[0.0], [-1.0]] and high.tolist() == [[0.0], [2.0]]
    interior_before = [c.model_copy(update={"others_low": None, "others_high": None}) for c in inside]
    low, high = state_value_ranges(interior_before, [], ["x"], (np.array([-1.0]), np.array([2.0])), {"s": [0.0, 1.0]})
    assert low.tolist() == [[0.0], [-np.inf]] and high.tolist() == [[0.0], [np.inf]]
    shared = find_couplings(frame, ["x"], ["s", "t"])
    low, high = state_value_ranges(shared, [], ["x"], (np.array([-1.0]), np.array([2.0])), {"s": [0.0, 1.0], "t": [0.0, 1.0]})
    assert np.isneginf(low).all() and np.isposinf(high).all()
