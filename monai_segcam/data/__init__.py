# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Synthetic data for demos, tests and benchmarks: abdominal phantoms and planted-evidence volumes."""

from __future__ import annotations

from .phantoms import make_phantom, phantom_affine, write_phantom_dataset
from .planted import PLANTED_TASKS, make_marker_case, make_planted_batch, make_planted_case, make_two_objects_case

__all__ = [
    "make_phantom",
    "phantom_affine",
    "write_phantom_dataset",
    "PLANTED_TASKS",
    "make_marker_case",
    "make_two_objects_case",
    "make_planted_case",
    "make_planted_batch",
]
