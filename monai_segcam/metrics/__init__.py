# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Explanation-quality metrics for volumetric CAMs: localisation, perturbation curves (deletion/insertion, ROAD),
randomisation checks (parameters, random logit), robustness (max-sensitivity), complexity (Gini, entropy) and answers
per structure.

The package exports the public names of its modules (each module's ``__all__``, in this order).
"""

from __future__ import annotations

from . import localization, perturbation, randomization, road, robustness, sparsity, statistics, structures
from .localization import *  # noqa: F403
from .perturbation import *  # noqa: F403
from .randomization import *  # noqa: F403
from .road import *  # noqa: F403
from .robustness import *  # noqa: F403
from .sparsity import *  # noqa: F403
from .statistics import *  # noqa: F403
from .structures import *  # noqa: F403

__all__: list[str] = []
__all__ += localization.__all__
__all__ += statistics.__all__
__all__ += perturbation.__all__
__all__ += randomization.__all__
__all__ += road.__all__
__all__ += robustness.__all__
__all__ += sparsity.__all__
__all__ += structures.__all__
