# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Volumetric Seg-CAMs for 3D segmentation networks in MONAI."""

from __future__ import annotations

__version__ = "0.1.0"
