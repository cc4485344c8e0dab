# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

SHAPE = (20, 16, 12)
PEAK = (14, 5, 3)


@pytest.fixture
def volumes():
    """Image, CAM with a planted maximum at PEAK, and a box region (centroid (6, 8, 8))."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=SHAPE).astype(np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))
    dist2 = ((grid - np.array(PEAK)[:, None, None, None]) ** 2).sum(0)
    cam = np.exp(-dist2 / 8.0).astype(np.float32)
    region = np.zeros(SHAPE, dtype=bool)
    region[4:9, 6:11, 6:11] = True
    return image, cam, region
