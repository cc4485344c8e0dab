# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Shared test settings: seeded, headless, one intra-op thread.

The tests run small volumes; on a 2-core machine two OpenMP threads make tiny convolutions and instance norms
10-50x slower under load (measured), so every test runs with one thread.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
