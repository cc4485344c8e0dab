# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Reliability tests run tiny volumes: one intra-op thread avoids OpenMP oversubscription on a busy 2-core box."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
