# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Array transforms computing and normalising Seg-CAMs of one channel-first item ``(C, *spatial)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import Transform
from monai.utils import TransformBackends, ensure_tuple, look_up_option
from torch import nn

from ..cam import Region, normalize_cam
from ..cam.regions import region_source
from ..cam.result import as_image_map
from ..explainers import ExplainRequest

__all__ = ["ComputeSegCAM", "NormalizeSegCAM"]


class ComputeSegCAM(Transform):
    """Seg-CAMs of one channel-first image ``(C, *spatial)`` (no batch dimension), on the image's voxel grid.

    The result is a ``MetaTensor`` ``(len(classes), *spatial)`` carrying the image's metadata and
    ``applied_operations``, so ``Invertd`` maps it back to the original image like the prediction. With a list of
    ``layers`` the result is a dict ``{layer: MetaTensor}``. Maps are raw (see :py:class:`NormalizeSegCAM`).

    Args:
        network: the segmentation network (its device is where the CAM is computed).
        layers: the CAM layer(s), see :py:class:`~monai_segcam.SegCAM`.
        method: the CAM method, see :py:class:`~monai_segcam.SegCAM`.
        classes: the explained class index or indices.
        region: the explained region (``"pred"``, ``"label"``, ``"fp"``, ``"voxel:I,J,K"``, a mask, a
            :py:class:`~monai_segcam.Voxel`...: :py:func:`~monai_segcam.cam.regions.as_region`).
        inferer: a ``SlidingWindowInferer`` (e.g. a bundle's ``@inferer``) for sliding-window CAMs with the same
            windows, or ``None`` / a ``SimpleInferer`` for whole-volume CAMs.
        device: the device the image, prediction and label are moved to for the computation; the result comes back
            on the image's device. Defaults to leaving them where they are (``SegCAM`` moves the image to the
            network's device).
        contrast: a class ``c2``: explain ``sum_M (y_c - y_c2)`` ("why ``c`` here and not ``c2``"), for every method.
        cam_kwargs: further options of the CAM engine (``target``, ``relu``, ``multi_label``, ``output_selector``...).

    Example:
        .. code-block:: python

            cam = ComputeSegCAM(net, layers="pre_head", classes=1)(item["image"], pred=item["pred"])  # (1, H, W, D)
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        network: nn.Module,
        layers: str | Sequence[str] = "pre_head",
        method: str = "hirescam",
        classes: int | Sequence[int] = 1,
        region: str | Region | torch.Tensor = "pred",
        inferer: Inferer | None = None,
        device: torch.device | str | None = None,
        contrast: int | None = None,
        **cam_kwargs: Any,
    ) -> None:
        self.request = ExplainRequest.from_inferer(
            inferer, method=method, layers=layers, classes=tuple(ensure_tuple(classes)), region=region, options=cam_kwargs
        )
        self.network, self.engine = network, self.request.build(network)
        self.method = self.engine.method_name
        self.classes, self.region = self.request.classes, region
        self.contrast: dict[str, Any] = {} if contrast is None else {"contrast": int(contrast)}  # only when asked
        self.device = device
        self.multi_label = bool(getattr(self.engine, "multi_label", cam_kwargs.get("multi_label", False)))

    def __call__(
        self, img: torch.Tensor, pred: torch.Tensor | None = None, label: torch.Tensor | None = None
    ) -> MetaTensor | dict[str, MetaTensor]:
        """Compute the CAMs of ``img`` ``(C, *spatial)``.

        Args:
            img: the network input of one item, channel first.
            pred: the item's prediction, logits ``(C_out, *spatial)`` or a label map ``(1, *spatial)`` (also a
                floating-point one, as ``AsDiscrete(argmax=True)`` gives), used for prediction-based regions
                instead of a new prediction pass.
            label: the item's ground truth ``(1, *spatial)`` or one-hot, for ``"label"``, ``"fp"`` and ``"fn"``.
        """
        maps, _, _ = self.explain(img, pred, label)
        return next(iter(maps.values())) if self.request.single else maps

    def explain(
        self,
        img: torch.Tensor,
        pred: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
        prompt: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, MetaTensor], torch.Tensor, tuple[int, ...]]:
        """The maps per layer (as :py:meth:`__call__`, always a dict), the explained region per class
        ``(n_classes, *spatial)`` (bool), e.g. for :py:func:`~monai_segcam.metrics.cam_statistics`, and the classes
        explained. ``prompt``: the forward arguments of a promptable explainer for this item (what its
        ``prompt_arguments`` read from an evaluator's output), e.g. ``classes`` and ``points``; they replace
        ``classes``."""
        if not isinstance(img, torch.Tensor) or img.ndim < 2:
            raise ValueError(f"img must be a channel-first tensor (C, *spatial), got {getattr(img, 'shape', img)}.")
        for name, value in (("pred", pred), ("label", label)):
            if value is not None and tuple(value.shape[1:]) != tuple(img.shape[1:]):
                raise ValueError(
                    f"{name} shape {tuple(value.shape)} does not match the image grid {tuple(img.shape[1:])}: "
                    "compute the CAM before any transform that changes the grid (e.g. before Invertd)."
                )
        device = torch.device(self.device) if self.device is not None else img.device
        source = region_source(pred[None].to(device) if pred is not None else None, self.multi_label)
        truth = torch.as_tensor(label)[None].to(device) if label is not None else None
        forward = {"classes": self.classes, **(prompt or {}), **self.contrast}
        result = self.engine(img[None].to(device), region=self.region, pred=source, label=truth, **forward)
        maps = {layer: as_image_map(cam.as_tensor()[0].detach().to(img.device), img) for layer, cam in result.items()}
        return maps, result.region[0].cpu() > 0, tuple(result.classes)


class NormalizeSegCAM(Transform):
    """Scale each channel of a CAM ``(N, *spatial)`` to [0, 1], keeping its metadata.

    An explicit post-step: raw maps stay comparable across cases, layers and classes, normalised ones do not. Apply
    it after ``Invertd`` when the normalised values should describe the original grid.

    Args:
        mode: ``"minmax"`` or ``"percentile"`` (the ``percentiles`` become 0 and 1, values clipped).
        percentiles: lower and upper percentile for ``"percentile"``.

    Example:
        .. code-block:: python

            shown = NormalizeSegCAM(mode="percentile", percentiles=(1, 99))(cam)
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, mode: str = "minmax", percentiles: Sequence[float] = (1.0, 99.0)) -> None:
        self.mode = look_up_option(mode, ("minmax", "percentile"))
        self.percentiles = percentiles

    def __call__(self, cam: torch.Tensor) -> torch.Tensor:
        """Normalise ``cam`` ``(N, *spatial)``."""
        if not isinstance(cam, torch.Tensor) or cam.ndim < 2:
            raise ValueError(f"cam must be a channel-first tensor (N, *spatial), got {getattr(cam, 'shape', cam)}.")
        out = normalize_cam(cam[None], mode=self.mode, percentiles=self.percentiles)
        return as_image_map(out[0], cam) if isinstance(cam, MetaTensor) else out[0]
