# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""An inferer returning the usual prediction and keeping the Seg-CAMs of the same inputs.

The prediction is computed once, by a wrapped MONAI inferer (under the evaluator's ``torch.no_grad()``, so it costs
what it always costs); the CAM then reuses it for the region (``pred=``), so prediction-based regions need no extra
prediction pass. The CAM engines enable gradients themselves, so the inferer works inside ``SupervisedEvaluator``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer
from monai.utils import ensure_tuple
from torch import nn

from ..cam import CAMResult, Explainer, Region
from ..cam.regions import region_source
from ..explainers import ExplainRequest

__all__ = ["SegCAMInferer"]


class SegCAMInferer(Inferer):
    """Run an inferer and compute the Seg-CAMs of the same inputs, reusing its prediction.

    ``__call__`` returns the wrapped inferer's prediction (a ``MetaTensor`` with the input's metadata), unchanged, and
    stores the CAMs (a :py:class:`~monai_segcam.cam.CAMResult`: per layer a ``MetaTensor`` ``(B, n_classes,
    *spatial)`` on the input grid with the input's metadata) in :py:attr:`last_cam`. In an Ignite engine, attach a
    :py:class:`~monai_segcam.handlers.SegCAMOutputHandler` to copy it into ``engine.state.output["cam"]`` at
    ``IterationEvents.FORWARD_COMPLETED``, ready for postprocessing (``Invertd``, ``SaveImaged``).

    The CAM engine is the one an :py:class:`~monai_segcam.explainers.ExplainRequest` builds for the wrapped inferer. Regions that need the ground
    truth (``"label"``, ``"fp"``, ``"fn"``) are not available here (the inferer never sees the label): use
    :py:class:`~monai_segcam.handlers.SegCAMHandler`.

    Args:
        inferer: the inferer making the prediction: ``SimpleInferer`` (default) or ``SlidingWindowInferer``.
        layers, method, classes, region, contrast, cam_kwargs: as for :py:class:`~monai_segcam.transforms.ComputeSegCAM`.

    Example:
        .. code-block:: python

            inferer = SegCAMInferer(SlidingWindowInferer(roi_size=(96, 96, 96)), layers="pre_head", classes=1)
            evaluator = SupervisedEvaluator(
                device, val_loader, network, inferer=inferer, postprocessing=post, val_handlers=[SegCAMOutputHandler()]
            )
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        layers: str | Sequence[str] = "pre_head",
        method: str = "hirescam",
        classes: int | Sequence[int] = 1,
        region: str | Region | torch.Tensor = "pred",
        contrast: int | None = None,
        **cam_kwargs: Any,
    ) -> None:
        Inferer.__init__(self)
        self.contrast: dict[str, Any] = {} if contrast is None else {"contrast": int(contrast)}
        self.inferer = SimpleInferer() if inferer is None else inferer
        if not isinstance(self.inferer, (SimpleInferer, SlidingWindowInferer)):
            raise TypeError(
                f"SegCAMInferer wraps a SimpleInferer or a SlidingWindowInferer, got {type(self.inferer).__name__}."
            )
        self.request = ExplainRequest.from_inferer(
            self.inferer, method=method, layers=layers, classes=tuple(ensure_tuple(classes)), region=region,
            options=cam_kwargs,
        )
        self.last_cam: CAMResult | None = None
        self._engine: Explainer[CAMResult] | None = None
        self._network: nn.Module | None = None

    def engine(self, network: nn.Module) -> Explainer[CAMResult]:
        """The CAM engine for ``network`` (built once per network)."""
        if self._engine is None or self._network is not network:
            self._engine, self._network = self.request.build(network), network
        return self._engine

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """The prediction of ``network`` on ``inputs`` ``(B, C, *spatial)``; the CAM goes to :py:attr:`last_cam`.

        Raises:
            ValueError: when extra network arguments are given (the CAM engines call the network on the input only).
        """
        if args or kwargs:
            raise ValueError(
                "SegCAMInferer cannot pass extra arguments to the network: the CAM engines call it on the input only."
            )
        if not isinstance(network, nn.Module):
            raise TypeError(f"SegCAMInferer explains a torch.nn.Module, got a {type(network).__name__}.")
        self.last_cam = None
        pred = self.inferer(inputs, network)
        if not isinstance(pred, torch.Tensor):
            raise TypeError(
                f"The inferer returned a {type(pred).__name__}; SegCAMInferer needs a tensor (B, C, *spatial)."
            )
        if isinstance(inputs, MetaTensor) and not isinstance(pred, MetaTensor):
            pred = MetaTensor(pred).copy_meta_from(inputs)
        source = region_source(pred, bool(self.request.options.get("multi_label", False)))
        call = {"classes": self.request.classes, "region": self.request.region, **self.contrast}
        self.last_cam = self.engine(network)(inputs, pred=source, **call)
        return pred
