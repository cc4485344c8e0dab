# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The optional dependency of :py:mod:`monai_segcam.nnunet`: nnU-Net v2, imported only when it is used."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require_nnunet", "INSTALL_HINT"]

INSTALL_HINT = (
    "pip install monai-segcam[nnunet] (keep your torch: install it first, or add a constraint such as "
    "`-c constraints.txt` pinning it)"
)


def require_nnunet(module: str = "nnunetv2") -> ModuleType:
    """Import ``module`` of nnU-Net v2, or raise an ``ImportError`` that says how to install it.

    Example:
        .. code-block:: python

            predict = require_nnunet("nnunetv2.inference.predict_from_raw_data")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"nnU-Net model folders need nnU-Net v2 ({module} could not be imported: {exc}). Install it with "
            f"{INSTALL_HINT}."
        ) from exc
