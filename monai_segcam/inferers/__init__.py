# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Inferers that return the usual prediction and keep the Seg-CAMs of the same inputs."""

from __future__ import annotations

from ..cam.regions import region_source
from .segcam_inferer import SegCAMInferer

__all__ = ["SegCAMInferer", "region_source"]
