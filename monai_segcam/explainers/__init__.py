# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The explainer contract: a front door turns its user's input into an :py:class:`ExplainRequest`, the request builds
the explainer of its method's :py:class:`ExplainerKind` (from the registry), and the explainer's
:py:class:`~monai_segcam.CAMResult` goes to :py:mod:`monai_segcam.outputs`. A new explainer kind is one module and one
:py:func:`register_explainer` call (or a ``monai_segcam.explainers`` entry point)."""

from __future__ import annotations

from .kinds import CAM_ENGINES, OCCLUSION
from .registry import CAM_KIND, ENTRY_POINT_GROUP, ExplainerKind, explainer_kind, explainer_methods, register_explainer
from .request import ExplainRequest, make_segcam

__all__ = [
    "ExplainRequest",
    "make_segcam",
    "ExplainerKind",
    "register_explainer",
    "explainer_kind",
    "explainer_methods",
    "ENTRY_POINT_GROUP",
    "CAM_KIND",
    "CAM_ENGINES",
    "OCCLUSION",
]
