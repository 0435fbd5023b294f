"""Small in-plane mask operations shared by the measurements (plain numpy)."""

from __future__ import annotations

import numpy as np


def dilate_in_plane(mask: np.ndarray) -> np.ndarray:
    """One-pixel 8-neighbour dilation over the last two axes (rows, cols) of a mask."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = mask.shape[-2:]
    pad = [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)]
    padded = np.pad(mask, pad)
    grown = np.zeros_like(mask)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            grown |= padded[..., 1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]
    return grown
