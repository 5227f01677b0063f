"""Exact couplings between a continuous feature's repeated value and a discrete feature's states.

Plants are full of them: a pump's flow is exactly 0 when, and only when, its status is 0. A diffusion
model learns the two features jointly but only approximately, so a few generated rows would show a
running pump with no flow — precisely the kind of impossible row an anomaly detector trained on
synthetic data then learns to accept. When the training data shows such a coupling on *every* row, we
record it, and generation makes the continuous value agree with the discrete state (see
``apply_couplings`` for why the state leads), so the coupling holds by construction.

Nothing here knows about pumps: any (continuous, discrete) pair of any dataset qualifies when the data
says so.
"""

from __future__ import annotations

from collections import Counter

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


def apply_couplings(
    table: pd.DataFrame, couplings: list[Coupling], sequence_length: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Make every coupling hold on a generated table of consecutive sequences of ``sequence_length`` rows.

    The discrete state leads: the denoiser draws states as categories, and their switching statistics
    match the data (a pump's on/off changes per step), while a continuous value that hovers at the edge
    of its atom flickers in and out of it (measured in docs/DECISIONS.md). So a state of the atom sets
    the value to the atom, and a state off the atom whose value came out at the atom takes the nearest
    off-atom value of the same sequence (the running pump keeps its flow), or, if the sequence has none,
    one drawn from the table. A feature that takes part in several couplings cannot follow two
    states: there, the continuous value leads and the states follow it.
    """
    continuous_uses = Counter(c.continuous for c in couplings)
    discrete_uses = Counter(c.discrete for c in couplings)
    for coupling in couplings:
        # The two kinds touch disjoint columns, so their order does not matter.
        if continuous_uses[coupling.continuous] == 1 and discrete_uses[coupling.discrete] == 1:
            _value_follows_state(table, coupling, sequence_length, rng)
        else:
            _state_follows_value(table, coupling)
    return table


def _value_follows_state(
    table: pd.DataFrame, coupling: Coupling, sequence_length: int, rng: np.random.Generator
) -> None:
    values = table[coupling.continuous].to_numpy(dtype=float).reshape(-1, sequence_length).copy()
    at_atom_state = np.isin(table[coupling.discrete].to_numpy(), coupling.atom_states).reshape(values.shape)
    values[at_atom_state] = coupling.atom
    usable = values != coupling.atom
    missing = ~at_atom_state & ~usable
    if missing.any():
        steps = np.arange(sequence_length)
        previous = np.maximum.accumulate(np.where(usable, steps, -1), axis=1)
        following = np.minimum.accumulate(np.where(usable, steps, sequence_length)[:, ::-1], axis=1)[:, ::-1]
        # Nearest usable step of the same sequence; on a tie the earlier one (the pump keeps its flow).
        use_previous = (previous >= 0) & ((following == sequence_length) | (steps - previous <= following - steps))
        source = np.where(use_previous, previous, following)
        rows, cols = np.nonzero(missing & (source < sequence_length))
        values[rows, cols] = values[rows, source[rows, cols]]
        stranded = missing & (source >= sequence_length)
        if stranded.any() and usable.any():
            values[stranded] = rng.choice(values[usable], int(stranded.sum()))
    table[coupling.continuous] = values.reshape(-1).astype(table[coupling.continuous].to_numpy().dtype)
    # Only a table without a single off-atom value is left with states to correct.
    _state_follows_value(table, coupling)


def _state_follows_value(table: pd.DataFrame, coupling: Coupling) -> None:
    """The discrete state follows whether the continuous value is the atom."""
    at_atom = table[coupling.continuous].to_numpy() == coupling.atom
    states = table[coupling.discrete].to_numpy()
    atom_states = np.asarray(coupling.atom_states)
    in_atom_states = np.isin(states, atom_states)
    # At the atom: keep a valid atom state, else use the most common one (listed first).
    fixed = np.where(at_atom & ~in_atom_states, atom_states[0], states)
    # Off the atom: a state reserved for the atom becomes the most common other state.
    fixed = np.where(~at_atom & in_atom_states, coupling.default_state, fixed)
    table[coupling.discrete] = fixed.astype(states.dtype)


def _by_frequency(states: np.ndarray) -> list[float]:
    """Distinct states, most frequent first."""
    values, counts = np.unique(states, return_counts=True)
    return [float(v) for v in values[np.argsort(-counts, kind="stable")]]


def _atoms(column: np.ndarray) -> list[float]:
    values, counts = np.unique(column, return_counts=True)
    return [float(v) for v, n in zip(values, counts, strict=True) if n >= MIN_ATOM_SHARE * len(column)]
