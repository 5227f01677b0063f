"""Pictures for docs/benchmarks.md that a person can read at a glance.

Figures are drawn with ``matplotlib.figure.Figure`` (Agg, no pyplot global state) and written as PNG;
every function returns the paths it wrote so the markdown links exactly what exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bench.metrics import pooled_acf, windows_to_frame
from model_core.diagnostics import DiagnosticsReport, plot_cdfs

_REAL, _SYNTHETIC = "tab:blue", "tab:orange"


def worst_cdfs(
    real: np.ndarray, synthetic: np.ndarray, names: list[str], report: DiagnosticsReport, out_dir: Path
) -> list[Path]:
    """CDF (or category-frequency) overlays of the five features the report ranks worst."""
    return plot_cdfs(
        windows_to_frame(real, names),
        windows_to_frame(synthetic, names),
        report,
        out_dir,
        features=report.summary.worst_features,
    )


def acf_curves(
    real: np.ndarray, synthetic: np.ndarray, names: list[str], features: list[str], max_lag: int, path: Path
) -> Path:
    """Autocorrelation at lags 0..max_lag of real and synthetic sequences, one panel per feature."""
    acf_real, acf_syn = pooled_acf(real, max_lag), pooled_acf(synthetic, max_lag)
    lags = np.arange(max_lag + 1)
    figure, axes_grid = _grid(len(features), columns=4)
    for axes, name in zip(axes_grid, features, strict=False):
        column = names.index(name)
        axes.plot(lags, acf_real[:, column], color=_REAL, label="real")
        axes.plot(lags, acf_syn[:, column], color=_SYNTHETIC, linestyle="--", label="synthetic")
        axes.axhline(0.0, color="grey", linewidth=0.5)
        axes.set_title(name, fontsize=9)
        axes.set_ylim(-1.05, 1.05)
        axes.set_xlabel("lag (steps)", fontsize=8)
    axes_grid[0].legend(fontsize=8)
    return _save(figure, path)


def sequences_side_by_side(
    real: np.ndarray, synthetic: np.ndarray, names: list[str], features: list[str], path: Path, count: int = 3
) -> Path:
    """A few real windows (left) and synthetic windows (right), one row per feature, on shared y axes."""
    figure = Figure(figsize=(10, 1.9 * len(features)), dpi=90, layout="constrained")
    axes = figure.subplots(len(features), 2, sharey="row", squeeze=False)
    steps = np.arange(real.shape[1])
    for row, name in enumerate(features):
        column = names.index(name)
        for side, (windows, label, colour) in enumerate(
            ((real, "real", _REAL), (synthetic, "synthetic", _SYNTHETIC))
        ):
            for index in range(min(count, len(windows))):
                axes[row, side].plot(
                    steps, windows[index, :, column], color=colour, alpha=0.5 + 0.5 / (index + 1)
                )
            axes[row, side].set_title(f"{name} ({label})", fontsize=9)
    return _save(figure, path)


def _grid(n_panels: int, columns: int) -> tuple[Figure, list]:
    rows = max(1, -(-n_panels // columns))
    figure = Figure(figsize=(3.2 * columns, 2.4 * rows), dpi=90, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, list(axes[:n_panels])


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
