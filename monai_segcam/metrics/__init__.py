# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Explanation-quality metrics for volumetric CAMs: localisation, perturbation curves, randomisation checks.

The package exports the public names of its modules (each module's ``__all__``, in this order).
"""

from __future__ import annotations

from . import localization, perturbation, randomization, statistics
from .localization import *  # noqa: F403
from .perturbation import *  # noqa: F403
from .randomization import *  # noqa: F403
from .statistics import *  # noqa: F403

__all__: list[str] = []
__all__ += localization.__all__
__all__ += statistics.__all__
__all__ += perturbation.__all__
__all__ += randomization.__all__
