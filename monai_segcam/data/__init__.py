# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Synthetic data for demos, tests and benchmarks."""

from __future__ import annotations

from .phantoms import make_phantom, phantom_affine, write_phantom_dataset

__all__ = ["make_phantom", "phantom_affine", "write_phantom_dataset"]
