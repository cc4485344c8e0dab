# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Shared test settings: deterministic, 2 threads (the CI machine has 2 cores)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
