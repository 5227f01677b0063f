"""Sliding training windows over the transformed series, one segment at a time.

A window never crosses a segment boundary (a gap in the timestamps), so the model never learns a jump
that is really missing data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def window_starts(segments: list[tuple[int, int]], seq_len: int, stride: int) -> np.ndarray:
    """Row index of the first step of every window, over all segments."""
    starts = [np.arange(a, b - seq_len + 1, stride) for a, b in segments if b - a >= seq_len]
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


class WindowDataset(Dataset[dict[str, torch.Tensor]]):
    """Windows of several row-aligned arrays: item ``i`` maps each name to its ``[seq_len, ...]`` slice."""

    def __init__(
        self, arrays: dict[str, np.ndarray], segments: list[tuple[int, int]], seq_len: int, stride: int = 1
    ):
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"arrays differ in length: {lengths}")
        self.arrays = {name: torch.as_tensor(array) for name, array in arrays.items()}
        self.seq_len = seq_len
        self.starts = torch.as_tensor(window_starts(segments, seq_len, stride), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = int(self.starts[index])
        return {name: array[start : start + self.seq_len] for name, array in self.arrays.items()}

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Many windows at once by fancy indexing (much faster than a DataLoader over __getitem__)."""
        rows = self.starts[indices][:, None] + torch.arange(self.seq_len)
        return {name: array[rows] for name, array in self.arrays.items()}
