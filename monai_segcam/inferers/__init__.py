# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Inferers that return the usual prediction and keep the Seg-CAMs of the same inputs."""

from __future__ import annotations

from ..cam.factory import make_segcam  # its home is the core; kept here for the front doors' imports
from ..cam.regions import region_source
from .segcam_inferer import SegCAMInferer

__all__ = ["SegCAMInferer", "make_segcam", "region_source"]
