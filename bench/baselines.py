"""Reference points measured beside the model, so every number has a floor and a baseline.

* Floors (what a perfect generator would score, given sampling noise): real windows against other real
  windows, split at random or by time. The random split is optimistic (stride-1 windows overlap, so the
  halves share most rows); the time split also contains the plant's drift over the year. The split by
  stretches (``unseen_stretches``) stands in for fresh data from the same process: windows of stretches
  the real side never saw, the nearest thing to a perfect generator the data itself offers.
* Baselines (what a trivial generator scores): every cell drawn independently from its feature's real
  marginal (perfect marginals, no dynamics, no cross-feature structure), and a VAR(1) fitted by least
  squares (linear dynamics and Gaussian noise, no regimes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def random_halves(windows: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(windows))
    half = len(windows) // 2
    return windows[order[:half]], windows[order[half:]]


def time_halves(starts: np.ndarray, windows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows that lie wholly in the first half of the series' rows, and those in the second half."""
    length = windows.shape[1]
    middle = n_rows // 2
    return windows[starts + length <= middle], windows[starts >= middle]


#: A stretch is this many window lengths of consecutive rows (a week of hourly rows with 24-step windows):
#: long against a window, so that few windows cross a stretch boundary, and short against the series, so
#: that every season lands on both sides of a split.
STRETCH_WINDOWS = 7


def stretch_labels(starts: np.ndarray, length: int) -> np.ndarray:
    """The stretch (of ``STRETCH_WINDOWS * length`` rows) each window lies in; -1 for one across two."""
    rows = STRETCH_WINDOWS * length
    first, last = starts // rows, (starts + length - 1) // rows
    return np.where(first == last, first, -1)


def unseen_stretches(
    starts: np.ndarray, windows: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(seen, their stretches, unseen, their stretches): the windows of a random half of the stretches,
    and those of the other half (windows across two stretches belong to neither).

    The discriminative score of seen against unseen, with the unseen side split by stretch (see
    ``model_core.discriminator.discrimination_gap``), is what data the classifier has not seen scores:
    the windows of a perfect generator would be new to the real data in the same way.
    """
    labels = stretch_labels(starts, windows.shape[1])
    stretches = np.unique(labels[labels >= 0])
    seen = np.isin(labels, rng.permutation(stretches)[: len(stretches) // 2])
    unseen = (labels >= 0) & ~seen
    return windows[seen], labels[seen], windows[unseen], labels[unseen]


def iid_sample(series: np.ndarray, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, length, D]`` windows whose every cell is an independent draw from its column's real values."""
    picks = rng.integers(0, len(series), size=(n, length, series.shape[1]))
    return np.take_along_axis(series, picks.reshape(-1, series.shape[1]), axis=0).reshape(picks.shape)


@dataclass(frozen=True)
class Var1:
    """x_t = intercept + x_{t-1} @ coef + noise, noise ~ N(0, noise_factor.T @ noise_factor)."""

    intercept: np.ndarray
    coef: np.ndarray
    noise_factor: np.ndarray

    def simulate(self, first_rows: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
        """Roll out ``length`` steps from each row of ``first_rows`` (real states, one per window)."""
        out = np.empty((len(first_rows), length, first_rows.shape[1]))
        out[:, 0] = first_rows
        for step in range(1, length):
            noise = rng.standard_normal(first_rows.shape) @ self.noise_factor
            out[:, step] = self.intercept + out[:, step - 1] @ self.coef + noise
        return out


def fit_var1(series: np.ndarray, segments: list[tuple[int, int]]) -> Var1:
    """Least-squares VAR(1) over consecutive rows within each gap-free segment.

    ``lstsq`` gives the minimum-norm solution when columns are collinear (a pump's flow and state), and
    the noise is sampled through an eigen-decomposition with negative eigenvalues clipped, because the
    residual covariance of such data is singular and a Cholesky factor would not exist.
    """
    previous = np.concatenate([series[a : b - 1] for a, b in segments])
    current = np.concatenate([series[a + 1 : b] for a, b in segments])
    design = np.hstack([np.ones((len(previous), 1)), previous])
    solution, *_ = np.linalg.lstsq(design, current, rcond=None)
    residuals = current - design @ solution
    dof = max(len(current) - design.shape[1], 1)
    eigenvalues, eigenvectors = np.linalg.eigh(residuals.T @ residuals / dof)
    factor = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))).T
    return Var1(intercept=solution[0], coef=solution[1:], noise_factor=factor)


def snap_to_support(windows: np.ndarray, series: np.ndarray, kinds: list[str]) -> np.ndarray:
    """Discrete (and constant) columns to the nearest real category, continuous clipped to the real range."""
    out = windows.copy()
    for column, kind in enumerate(kinds):
        observed = series[:, column]
        if kind == "continuous":
            out[..., column] = np.clip(out[..., column], observed.min(), observed.max())
        else:
            levels = np.unique(observed)
            nearest = np.abs(out[..., column][..., None] - levels).argmin(axis=-1)
            out[..., column] = levels[nearest]
    return out
