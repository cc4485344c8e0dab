# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The built-in explainer kinds: the CAM engines (every registered CAM rule; VISTA3D's prompts for a VISTA3D network)
and occlusion."""

from __future__ import annotations

from typing import Any

from monai.utils import ensure_tuple

from ..cam.methods import CAMRule, method_names, registered_rule
from ..cam.prompts import Vista3DSegCAM, is_vista3d
from ..cam.segcam import SegCAM
from ..cam.sliding_window import SlidingWindowSegCAM
from ..perturbation.occlusion import LAYER_KEY, METHOD, SegOcclusion
from .registry import CAM_KIND, ExplainerKind, register_explainer
from .request import ExplainRequest

__all__ = ["CAM_ENGINES", "OCCLUSION"]

_PRECISION = frozenset({"amp", "amp_dtype"})


def _build_cam(network: Any, request: ExplainRequest) -> SegCAM | SlidingWindowSegCAM | Vista3DSegCAM:
    """:py:class:`~monai_segcam.SlidingWindowSegCAM` with the request's windows, else :py:class:`~monai_segcam.SegCAM`;
    for a VISTA3D network, :py:class:`~monai_segcam.cam.Vista3DSegCAM` with its bundle inferer's windows."""
    options = {"layers": request.layers, "method": request.method, **request.kind_options()}
    if is_vista3d(network):  # a promptable network: the prompts' windows are those of its bundle's inferer
        return Vista3DSegCAM.from_inferer(request.inferer, network, **options)
    request.check_inferer()
    if request.windows is None:
        return SegCAM(network, **request.window_kwargs(), **options)
    return SlidingWindowSegCAM(network, **request.window_kwargs(), **options)


def _cam_result_keys(request: ExplainRequest) -> tuple[str, ...]:
    """The requested layers, or the one layer of a rule that has its own (input attributions: ``"input"``)."""
    method = request.method
    rule = method if isinstance(method, CAMRule) else registered_rule(str(method))
    return (rule.layer,) if rule.layer else tuple(ensure_tuple(request.layers))


def _build_occlusion(network: Any, request: ExplainRequest) -> SegOcclusion:
    """:py:class:`~monai_segcam.perturbation.SegOcclusion` with the request's windows (whole volumes without)."""
    request.check_inferer()
    return SegOcclusion(network, **request.window_kwargs(), **request.kind_options())


CAM_ENGINES = register_explainer(
    ExplainerKind(CAM_KIND, _build_cam, _cam_result_keys, _PRECISION | {"activation_budget"}, methods=method_names)
)
OCCLUSION = register_explainer(
    ExplainerKind(
        METHOD, _build_occlusion, result_keys=lambda request: (LAYER_KEY,),
        options=_PRECISION | {"mask_size", "stride", "baseline", "blur_sigma", "batch_size"},
    )  # fmt: skip
)
