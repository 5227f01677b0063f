from __future__ import annotations

import numpy as np
import torch

from model_core.windows import WindowDataset, window_starts


def test_windows_stay_inside_their_segment():
    starts = window_starts([(0, 10), (15, 20), (20, 23)], seq_len=4, stride=2)
    assert starts.tolist() == [0, 2, 4, 6, 15]


def test_dataset_items_and_batches_agree():
    values = np.arange(40, dtype=np.float32).reshape(20, 2)
    tokens = np.arange(20)
    data = WindowDataset({"x": values, "tokens": tokens}, [(0, 12), (12, 20)], seq_len=5, stride=1)
    assert len(data) == 8 + 4
    item = data[8]
    assert item["tokens"].tolist() == [12, 13, 14, 15, 16]
    batch = data.batch(torch.tensor([0, 8]))
    assert torch.equal(batch["x"][1], item["x"])
