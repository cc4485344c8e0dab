# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Volumetric Seg-CAMs for 3D segmentation networks in MONAI.

Example:
    .. code-block:: python

        from monai_segcam import SegCAM

        cam = SegCAM(network, layers="pre_head", method="hirescam")
        result = cam(image, classes=1, region="pred")  # a CAMResult: result.map, result.region, ...

Subpackages: :py:mod:`monai_segcam.cam` (engines), :py:mod:`~monai_segcam.transforms`,
:py:mod:`~monai_segcam.perturbation` (occlusion, input channels),
:py:mod:`~monai_segcam.inferers`, :py:mod:`~monai_segcam.handlers` (Ignite), :py:mod:`~monai_segcam.metrics`
(explanation quality), :py:mod:`~monai_segcam.visualize` (pictures), :py:mod:`~monai_segcam.data` (phantoms),
:py:mod:`~monai_segcam.cli` (``monai-segcam``); ``monai_segcam.show(result, image)`` draws a result in a notebook.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cam import (
        Box,
        CAMResult,
        Component,
        SegCAM,
        SlidingWindowSegCAM,
        Vista3DSegCAM,
        Voxel,
        layer_presets,
        list_layers,
        mirror_flips,
        normalize_cam,
        resolve_layers,
    )
    from .explainers import ExplainerKind, ExplainRequest, make_segcam, register_explainer
    from .handlers import SegCAMHandler
    from .inferers import SegCAMInferer
    from .perturbation import ChannelAttribution, SegOcclusion
    from .transforms import ComputeSegCAM, NormalizeSegCAMd, SegCAMd
    from .visualize.notebook import show

from ._version import __version__ as __version__

__all__ = [
    "SegCAM",
    "SlidingWindowSegCAM",
    "Vista3DSegCAM",
    "CAMResult",
    "mirror_flips",
    "SegOcclusion",
    "ChannelAttribution",
    "list_layers",
    "layer_presets",
    "resolve_layers",
    "normalize_cam",
    "Voxel",
    "Box",
    "Component",
    "ComputeSegCAM",
    "SegCAMd",
    "NormalizeSegCAMd",
    "SegCAMInferer",
    "SegCAMHandler",
    "show",
    "ExplainRequest",
    "make_segcam",
    "ExplainerKind",
    "register_explainer",
]

# the package imports its subpackages (and so torch and MONAI) on first use of a name, as MONAI and SciPy do, so that
# ``monai-segcam --help`` answers at once; ``from monai_segcam import SegCAM`` and ``monai_segcam.cam`` work as before
_SUBPACKAGES = {"cam", "cli", "data", "explainers", "files", "handlers", "inferers", "metrics", "nnunet", "outputs", "perturbation"}
_SUBPACKAGES |= {"report", "transforms", "utils", "visualize"}
_HOMES = {"SegCAMHandler": "handlers", "SegCAMInferer": "inferers", "ChannelAttribution": "perturbation"}
_HOMES |= {"SegOcclusion": "perturbation", "ComputeSegCAM": "transforms", "SegCAMd": "transforms"}
_HOMES |= {"NormalizeSegCAMd": "transforms", "show": "visualize.notebook"}  # every other name: one of monai_segcam.cam
_HOMES |= dict.fromkeys(["ExplainRequest", "make_segcam", "ExplainerKind", "register_explainer"], "explainers")


def __getattr__(name: str) -> Any:
    """A name of ``__all__`` or a subpackage, imported when first asked for."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES.get(name, 'cam')}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})
