"""Exact couplings between a continuous feature's repeated value and a discrete feature's states.

Plants are full of them: a pump's flow is exactly 0 when, and only when, its status is 0. A diffusion
model learns the two features jointly but only approximately, so a few generated rows would show a
running pump with no flow — precisely the kind of impossible row an anomaly detector trained on
synthetic data then learns to accept. When the training data shows such a coupling on *every* row, we
record it, and generation derives the discrete state from the continuous value (which the quantile
transform reproduces with its exact share of repeated values), so the coupling holds by construction.

Nothing here knows about pumps: any (continuous, discrete) pair of any dataset qualifies when the data
says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

#: A repeated value must cover at least this share of rows to be considered an atom.
MIN_ATOM_SHARE = 0.01


class Coupling(BaseModel):
    """``continuous == atom`` exactly when ``discrete`` is in ``atom_states``."""

    continuous: str
    atom: float
    discrete: str
    atom_states: list[float]
    #: The state written when the continuous value is not the atom but the state says it should be.
    default_state: float


def find_couplings(values: pd.DataFrame, continuous: list[str], discrete: list[str]) -> list[Coupling]:
    """Every (continuous atom, discrete states) pair that holds on all rows of ``values``."""
    couplings = []
    for c in continuous:
        for d in discrete:
            pair = values[[c, d]].dropna().to_numpy(dtype=float)
            column, states = pair[:, 0], pair[:, 1]
            for atom in _atoms(column):
                at_atom = column == atom
                inside = _by_frequency(states[at_atom])
                outside = _by_frequency(states[~at_atom])
                if outside and not set(inside) & set(outside):
                    couplings.append(
                        Coupling(continuous=c, atom=atom, discrete=d, atom_states=inside, default_state=outside[0])
                    )
    return couplings


def apply_couplings(table: pd.DataFrame, couplings: list[Coupling]) -> pd.DataFrame:
    """Make every coupling hold: the discrete state follows whether the continuous value is the atom."""
    for coupling in couplings:
        at_atom = table[coupling.continuous].to_numpy() == coupling.atom
        states = table[coupling.discrete].to_numpy()
        atom_states = np.asarray(coupling.atom_states)
        in_atom_states = np.isin(states, atom_states)
        # At the atom: keep a valid atom state, else use the most common one (listed first).
        fixed = np.where(at_atom & ~in_atom_states, atom_states[0], states)
        # Off the atom: a state reserved for the atom becomes the most common other state.
        fixed = np.where(~at_atom & in_atom_states, coupling.default_state, fixed)
        table[coupling.discrete] = fixed.astype(states.dtype)
    return table


def _by_frequency(states: np.ndarray) -> list[float]:
    """Distinct states, most frequent first."""
    values, counts = np.unique(states, return_counts=True)
    return [float(v) for v in values[np.argsort(-counts, kind="stable")]]


def _atoms(column: np.ndarray) -> list[float]:
    values, counts = np.unique(column, return_counts=True)
    return [float(v) for v, n in zip(values, counts, strict=True) if n >= MIN_ATOM_SHARE * len(column)]
