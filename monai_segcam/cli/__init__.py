# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The ``monai-segcam`` command line: ``explain`` (CAMs of image files) and ``layers`` (what can be explained).

Example:
    .. code-block:: bash

        monai-segcam layers --bundle bundles/segcam_demo
        monai-segcam explain ct.nii.gz --bundle bundles/segcam_demo --layers pre_head --output cams/
"""

from __future__ import annotations

from .io import CLIError
from .main import build_parser, main

__all__ = ["CLIError", "build_parser", "main"]
