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


def test_apply_makes_states_follow_the_continuous_value():
    plant = simulate_plant(rows=300, seed=1)
    couplings = find_couplings(plant, ["F_PUMP1"], ["S_PUMP1"])
    generated = pd.DataFrame({"F_PUMP1": [0.0, 0.0, 12.5, 3.0], "S_PUMP1": [1, 0, 0, 1]})
    fixed = apply_couplings(generated, couplings)
    assert fixed["S_PUMP1"].tolist() == [0, 0, 1, 1]
    assert fixed["S_PUMP1"].dtype == np.int64
