# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""One intra-op thread for these small-volume engine tests: on a busy 2-core machine two OpenMP threads make the
tiny convolutions and instance norms of a (4, 8, 16) UNet 10-50x slower (measured); restored after each test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
