# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Transforms computing Seg-CAMs per item (postprocessing, before ``Invertd``), saving and normalising them."""

from __future__ import annotations

from . import array, dictionary
from .array import *  # noqa: F403 (the public names of each module, listed once: in its __all__)
from .dictionary import *  # noqa: F403

__all__ = [*array.__all__, *dictionary.__all__]
