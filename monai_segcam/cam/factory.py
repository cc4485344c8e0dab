# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The CAM engine matching an inferer: the one place that builds engines for the front doors (transforms, inferer,
handlers, command line)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer
from torch import nn

from .prompts import Vista3DSegCAM, is_vista3d
from .segcam import SegCAM
from .sliding_window import SlidingWindowSegCAM
from .windows import inferer_window_settings

if TYPE_CHECKING:
    from ..perturbation import SegOcclusion

__all__ = ["make_segcam", "result_layers", "method_name"]


def make_segcam(
    network: nn.Module, inferer: Inferer | None = None, **cam_kwargs: Any
) -> SegCAM | SlidingWindowSegCAM | SegOcclusion | Vista3DSegCAM:
    """The CAM engine matching an inferer: :py:class:`~monai_segcam.SlidingWindowSegCAM` with the window settings of
    a ``SlidingWindowInferer`` (or of the one wrapped by a :py:class:`~monai_segcam.inferers.SegCAMInferer`), else
    :py:class:`~monai_segcam.SegCAM` on whole volumes. ``method="occlusion"`` gives
    :py:class:`~monai_segcam.perturbation.SegOcclusion` with the same windows (``layers`` is ignored: occlusion maps
    have the single layer key ``"input"``).

    Args:
        network: the segmentation network.
        inferer: the inferer that makes the prediction, or ``None`` (whole volume).
        cam_kwargs: ``layers``, ``method``, ... of the CAM engine (``mask_size``, ``stride``, ``baseline``... of
            occlusion).

    Example:
        .. code-block:: python

            engine = make_segcam(net, SlidingWindowInferer(roi_size=(96, 96, 96)), layers="pre_head")
            occlusion = make_segcam(net, SlidingWindowInferer(roi_size=(96, 96, 96)), method="occlusion", mask_size=16)
    """
    from ..inferers.segcam_inferer import SegCAMInferer  # imported here: the front doors and perturbation import cam
    from ..perturbation import SegOcclusion
    from ..perturbation.occlusion import METHOD as OCCLUSION

    if isinstance(inferer, SegCAMInferer):
        inferer = inferer.inferer
    if is_vista3d(network):  # a promptable network: the prompts' windows are those of its bundle's inferer
        return Vista3DSegCAM.from_inferer(inferer, network, **cam_kwargs)
    if inferer is not None and not isinstance(inferer, (SimpleInferer, SlidingWindowInferer)):
        raise TypeError(
            f"Cannot reproduce a {type(inferer).__name__} for CAMs: use a SimpleInferer or a SlidingWindowInferer "
            "(or pass `inferer=None` to explain whole volumes)."
        )
    windows = inferer_window_settings(inferer).as_kwargs() if isinstance(inferer, SlidingWindowInferer) else None
    if cam_kwargs.get("method") == OCCLUSION:
        kwargs = {k: v for k, v in cam_kwargs.items() if k not in ("method", "layers")}
        return SegOcclusion(network, **{**(windows or {}), **kwargs})
    if windows is not None:
        return SlidingWindowSegCAM(network, **{**windows, **cam_kwargs})
    return SegCAM(network, **cam_kwargs)


def result_layers(method: Any, layers: str | Sequence[str]) -> str | Sequence[str]:
    """The layer keys of an engine's result for ``layers``: occlusion maps and input attributions (a rule with a
    ``layer``) have the single key ``"input"``.

    Example:
        >>> result_layers("occlusion", "pre_head"), result_layers("hirescam", ["bottleneck", "pre_head"])
        ('input', ['bottleneck', 'pre_head'])
    """
    from ..perturbation.occlusion import METHOD as OCCLUSION
    from .methods import method_names, registered_rule

    if method == OCCLUSION:
        return "input"
    rule = registered_rule(method) if isinstance(method, str) and method in method_names() else method
    return getattr(rule, "layer", None) or layers


def method_name(method: Any) -> str:
    """The method name a result and its files carry for a requested ``method``, by the one rule every front door
    follows: a name as given; a rule or explainer its own ``method_name`` (:py:attr:`CAMRule.method_name
    <monai_segcam.cam.methods.CAMRule.method_name>`: the registered name, else the class name); anything else its
    class name.

    Example:
        >>> from monai_segcam.cam.methods import SegHiResCAMRule
        >>> method_name("gradcam"), method_name(SegHiResCAMRule())
        ('gradcam', 'hirescam')
    """
    if isinstance(method, str):
        return method
    name = getattr(method, "method_name", None)
    return name if isinstance(name, str) and name else type(method).__name__
