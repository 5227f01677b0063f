from __future__ import annotations

import numpy as np
import pandas as pd

from model_core.couplings import apply_couplings, find_couplings
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


def test_a_single_counterexample_rules_a_coupling_out():
    rng = np.random.default_rng(0)
    state = rng.integers(0, 2, 500)
    flow = np.where(state == 1, rng.uniform(1, 2, 500), 0.0)
    frame = pd.DataFrame({"flow": flow, "state": state})
    assert len(find_couplings(frame, ["flow"], ["state"])) == 1
    frame.loc[10, ["flow", "state"]] = [0.0, 1]
    frame.loc[11, ["flow", "state"]] = [1.5, 1]
    assert find_couplings(frame, ["flow"], ["state"]) == []


def _pump_coupling():
    plant = simulate_plant(rows=300, seed=1)
    return find_couplings(plant, ["F_PUMP1"], ["S_PUMP1"])


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
