"""Exact couplings between a continuous feature and a discrete feature's states.

Plants are full of them: a pump's flow is exactly 0 when, and only when, its status is 0 (an *atom*
coupling, ``Coupling``); the pressure downstream of a pump lies in one range while it runs and in
another, disjoint one while it is off (a *range* coupling, ``RangeCoupling``). A diffusion model learns
the features jointly but only approximately, so a few generated rows would show a running pump with no
flow, or with the pressure of a stopped one — precisely the kind of impossible row an anomaly detector
trained on synthetic data then learns to accept. When the training data shows such a coupling on
*every* row, we record it, and generation makes the continuous value agree with the discrete state (see
``apply_couplings`` for why the state leads), so the coupling holds by construction. Stage 1 also
generates inside the couplings (``state_value_ranges`` says what each state allows; the trend's
``InnovationPool`` keeps to it), so that after-the-fact repair, which moves a value to another step's,
is a guarantee that finds nothing to do rather than a step of the pipeline.

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
    #: The range of the continuous value on the rows off the atom (a running pump's flows: never between
    #: 0 and its smallest running flow). None in schemas saved before it was recorded.
    others_low: float | None = None
    others_high: float | None = None


class RangeCoupling(BaseModel):
    """While ``discrete`` is in ``states[i]``, ``continuous`` lies in ``[lows[i], highs[i]]``; the
    intervals of different states do not overlap."""

    continuous: str
    discrete: str
    states: list[float]
    lows: list[float]
    highs: list[float]


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
                    others = column[~at_atom]
                    couplings.append(
                        Coupling(
                            continuous=c,
                            atom=atom,
                            discrete=d,
                            atom_states=inside,
                            default_state=outside[0],
                            others_low=float(others.min()),
                            others_high=float(others.max()),
                        )
                    )
    return couplings


def find_range_couplings(values: pd.DataFrame, continuous: list[str], discrete: list[str]) -> list[RangeCoupling]:
    """Every (continuous, discrete) pair whose per-state value ranges are pairwise disjoint on all rows.

    Each state must cover at least ``MIN_ATOM_SHARE`` of the rows: a state seen a handful of times
    separates from the others by chance too easily to be taken as a law of the plant.
    """
    couplings = []
    for c in continuous:
        for d in discrete:
            pair = values[[c, d]].dropna().to_numpy(dtype=float)
            column, states = pair[:, 0], pair[:, 1]
            levels, counts = np.unique(states, return_counts=True)
            if len(levels) < 2 or counts.min() < MIN_ATOM_SHARE * len(states):
                continue
            ranges = sorted((column[states == level].min(), column[states == level].max(), level) for level in levels)
            if all(low_next > high for (_, high, _), (low_next, _, _) in zip(ranges, ranges[1:], strict=False)):
                couplings.append(
                    RangeCoupling(
                        continuous=c,
                        discrete=d,
                        states=[float(level) for _, _, level in ranges],
                        lows=[float(low) for low, _, _ in ranges],
                        highs=[float(high) for _, high, _ in ranges],
                    )
                )
    return couplings


def apply_couplings(
    table: pd.DataFrame,
    couplings: list[Coupling],
    sequence_length: int,
    rng: np.random.Generator,
    ranges: list[RangeCoupling] | None = None,
) -> pd.DataFrame:
    """Make every coupling hold on a generated table of consecutive sequences of ``sequence_length`` rows.

    The discrete state leads: the denoiser draws states as categories, and their switching statistics
    match the data (a pump's on/off changes per step), while a continuous value that hovers at the edge
    of its atom flickers in and out of it (measured in docs/DECISIONS.md). So a state of the atom sets
    the value to the atom, and a state off the atom whose value came out at the atom takes the nearest
    off-atom value of the same sequence (the running pump keeps its flow), or, if the sequence has none,
    one drawn from the table. A feature that takes part in several couplings cannot follow two
    states: there, the continuous value leads and the states follow it.

    Range couplings come last, once every state is final, and always let the state lead (a value can
    satisfy several ranges at once: the intersection of its states' intervals). Where the state leads an
    atom coupling, its off-atom states count as a range coupling too: a running pump's flow stays inside
    the running range seen in training.
    """
    leading = _state_leads(couplings)
    for coupling, state_leads_it in zip(couplings, leading, strict=True):
        # The two kinds touch disjoint columns, so their order does not matter.
        if state_leads_it:
            _value_follows_state(table, coupling, sequence_length, rng)
        else:
            _state_follows_value(table, coupling)
    running = [c for c, state_leads_it in zip(couplings, leading, strict=True) if state_leads_it]
    present = {c.discrete: [float(v) for v in np.unique(table[c.discrete])] for c in running}
    by_feature: dict[str, list[RangeCoupling]] = {}
    for range_coupling in [*(ranges or []), *_running_ranges(running, present)]:
        by_feature.setdefault(range_coupling.continuous, []).append(range_coupling)
    for name, feature_ranges in by_feature.items():
        _value_into_state_ranges(table, name, feature_ranges, sequence_length, rng)
    return table


def state_value_ranges(
    couplings: list[Coupling],
    ranges: list[RangeCoupling],
    continuous: list[str],
    value_range: tuple[np.ndarray, np.ndarray],
    discrete_levels: dict[str, list[float]],
) -> tuple[np.ndarray, np.ndarray]:
    """What each discrete state allows each continuous feature, in original units, for generation to
    respect the couplings *while* it generates and not only repair them afterwards.

    Returns ``low``/``high`` [S, Dc]: row ``s`` is one state of one discrete feature (features in the order
    of ``discrete_levels``, each feature's levels in order, as ``trend.one_hot_states`` lays them out),
    -/+inf where the state says nothing. A row's allowed interval is the intersection over its states.
    Atom couplings count where the state leads (as in ``apply_couplings``): a state of the atom allows only
    the atom, any other state the range the feature had off the atom in training (a running pump's flows;
    in schemas saved before that range was recorded, anything but the atom — an interval only when the
    atom is an end of the feature's observed ``value_range``, so an atom inside the range bounds nothing).
    """
    slots = {(name, level): i for i, (name, level) in enumerate((n, v) for n, ls in discrete_levels.items() for v in ls)}
    low, high = np.full((len(slots), len(continuous)), -np.inf), np.full((len(slots), len(continuous)), np.inf)
    leading = [c for c, state_leads_it in zip(couplings, _state_leads(couplings), strict=True) if state_leads_it]
    for coupling in leading:
        j = continuous.index(coupling.continuous)
        recorded = coupling.others_low is not None  # then the off-atom states are a range coupling below
        for level in discrete_levels[coupling.discrete]:
            s = slots[coupling.discrete, level]
            if level in coupling.atom_states:
                low[s, j] = high[s, j] = coupling.atom
            elif recorded:
                continue
            elif coupling.atom <= value_range[0][j]:
                low[s, j] = np.nextafter(coupling.atom, np.inf)
            elif coupling.atom >= value_range[1][j]:
                high[s, j] = np.nextafter(coupling.atom, -np.inf)
    for range_coupling in [*ranges, *_running_ranges(leading, discrete_levels)]:
        j = continuous.index(range_coupling.continuous)
        for level, state_low, state_high in zip(
            range_coupling.states, range_coupling.lows, range_coupling.highs, strict=True
        ):
            s = slots[range_coupling.discrete, level]
            low[s, j], high[s, j] = max(low[s, j], state_low), min(high[s, j], state_high)
    return low, high


def _state_leads(couplings: list[Coupling]) -> list[bool]:
    """Per coupling, whether its discrete state leads: neither of its features takes part in another
    coupling (a value cannot follow two states; there, the value leads and the states follow it)."""
    continuous_uses = Counter(c.continuous for c in couplings)
    discrete_uses = Counter(c.discrete for c in couplings)
    return [continuous_uses[c.continuous] == 1 and discrete_uses[c.discrete] == 1 for c in couplings]


def _running_ranges(couplings: list[Coupling], states: dict[str, list[float]]) -> list[RangeCoupling]:
    """The off-atom range of each atom coupling that recorded one, as a range coupling of its discrete
    feature's off-atom ``states`` (by feature name): a running pump's flow stays in its running range."""
    ranges = []
    for coupling in couplings:
        if coupling.others_low is None or coupling.others_high is None:
            continue
        off_atom = [level for level in states[coupling.discrete] if level not in coupling.atom_states]
        ranges.append(
            RangeCoupling(
                continuous=coupling.continuous,
                discrete=coupling.discrete,
                states=off_atom,
                lows=[coupling.others_low] * len(off_atom),
                highs=[coupling.others_high] * len(off_atom),
            )
        )
    return ranges


def _value_into_state_ranges(
    table: pd.DataFrame, name: str, ranges: list[RangeCoupling], sequence_length: int, rng: np.random.Generator
) -> None:
    """Move each value that lies outside its row's interval (the intersection of its states' intervals)
    to the nearest step of the same sequence whose value lies inside it, else to a value drawn from the
    table inside it, else to the interval's nearest edge. Rows whose state combination has no common
    interval (never seen in training) keep their value."""
    values = table[name].to_numpy(dtype=float).reshape(-1, sequence_length)
    low, high = np.full(values.shape, -np.inf), np.full(values.shape, np.inf)
    for coupling in ranges:
        states = table[coupling.discrete].to_numpy(dtype=float).reshape(values.shape)
        for state, state_low, state_high in zip(coupling.states, coupling.lows, coupling.highs, strict=True):
            at_state = states == state
            low[at_state] = np.maximum(low[at_state], state_low)
            high[at_state] = np.minimum(high[at_state], state_high)
    outside = ((values < low) | (values > high)) & (low <= high)
    if not outside.any():
        return
    sequences, steps = np.nonzero(outside)
    candidates = values[sequences]  # [n_outside, L]: every value of the cell's own sequence
    inside = (candidates >= low[sequences, steps][:, None]) & (candidates <= high[sequences, steps][:, None])
    nearest, found = _nearest_step(inside, steps)
    fixed = values.copy()
    fixed[sequences[found], steps[found]] = candidates[found, nearest[found]]
    stranded_sequences, stranded_steps = sequences[~found], steps[~found]
    bounds = np.stack([low[stranded_sequences, stranded_steps], high[stranded_sequences, stranded_steps]], axis=1)
    # One pool per distinct interval (a handful: one per state combination), not one per cell.
    for interval in np.unique(bounds, axis=0):
        cells = (bounds == interval).all(axis=1)
        rows, cols = stranded_sequences[cells], stranded_steps[cells]
        pool = values[(values >= interval[0]) & (values <= interval[1])]
        fixed[rows, cols] = rng.choice(pool, len(rows)) if len(pool) else np.clip(values[rows, cols], *interval)
    table[name] = fixed.reshape(-1).astype(table[name].to_numpy().dtype)


def _value_follows_state(
    table: pd.DataFrame, coupling: Coupling, sequence_length: int, rng: np.random.Generator
) -> None:
    values = table[coupling.continuous].to_numpy(dtype=float).reshape(-1, sequence_length).copy()
    at_atom_state = np.isin(table[coupling.discrete].to_numpy(), coupling.atom_states).reshape(values.shape)
    values[at_atom_state] = coupling.atom
    usable = values != coupling.atom
    missing = ~at_atom_state & ~usable
    if missing.any():
        # Nearest usable step of the same sequence (the running pump keeps its flow).
        rows, cols = np.nonzero(missing)
        source, found = _nearest_step(usable[rows], cols)
        values[rows[found], cols[found]] = values[rows[found], source[found]]
        if not found.all() and usable.any():
            values[rows[~found], cols[~found]] = rng.choice(values[usable], int((~found).sum()))
    table[coupling.continuous] = values.reshape(-1).astype(table[coupling.continuous].to_numpy().dtype)
    # Only a table without a single off-atom value is left with states to correct.
    _state_follows_value(table, coupling)


def _nearest_step(allowed: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For cell ``i`` at step ``steps[i]`` of its sequence, whose allowed steps are ``allowed[i]`` (a row
    of length L): the nearest allowed step, the earlier one on a tie, and whether there is any."""
    positions = np.arange(allowed.shape[1])[None, :]
    distance = 2 * np.abs(positions - steps[:, None]) + (positions > steps[:, None])
    nearest = np.where(allowed, distance, np.iinfo(np.int64).max).argmin(axis=1)
    return nearest, allowed[np.arange(len(steps)), nearest]


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
