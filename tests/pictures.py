"""Reading the pictures the product draws, for tests that check what they show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pixels_of(path: Path, colour: str) -> int:
    """How many pixels of the image at `path` are `colour` (#rrggbb, within 8 per channel)."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    wanted = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - wanted).max(axis=1) <= 8).sum())
