# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Dictionary transforms computing and normalising Seg-CAMs, for postprocessing before ``Invertd``/``SaveImaged``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import MapTransform
from monai.utils import ensure_tuple, ensure_tuple_rep
from torch import nn

from ..cam import Region
from .array import ComputeSegCAM, NormalizeSegCAM

__all__ = ["SegCAMd", "SegCAMD", "SegCAMDict", "NormalizeSegCAMd", "NormalizeSegCAMD", "NormalizeSegCAMDict"]


class SegCAMd(MapTransform):
    """Dictionary-based :py:class:`~monai_segcam.transforms.ComputeSegCAM`: add the Seg-CAMs of ``keys`` to each item.

    Runs per item (channel first, no batch dimension), typically in an evaluator's ``postprocessing`` *before*
    ``Invertd``: the CAM is written on the network-input grid with the image's metadata and ``applied_operations``,
    so ``Invertd(keys=["pred", "cam"], nearest_interp=False)`` maps it back to the original image and ``SaveImaged``
    writes it with the original affine and shape. The item's prediction (``pred_key``: logits or a label map) defines
    prediction-based regions, so no extra prediction pass is made.

    Output keys: ``cam_key`` holds a ``MetaTensor`` ``(len(classes), *spatial)``. With a list of ``layers``, one key
    per layer is written instead, ``f"{cam_key}_{layer}"`` (e.g. ``cam_pre_head``, ``cam_bottleneck``); the
    :py:attr:`cam_keys` attribute lists every key written, for ``Invertd``/``SaveImaged``.

    Args:
        keys: the image key(s), the network inputs.
        network: the segmentation network.
        pred_key: the prediction key (one per image key, or one for all). ``None`` makes the CAM engine predict.
        label_key: the ground-truth key, needed by ``"label"``, ``"fp"`` and ``"fn"`` regions.
        cam_key: where the CAM is written (one per image key, or one for all when there is one image key).
        layers: the CAM layer(s), see :py:class:`~monai_segcam.SegCAM`.
        method: the CAM method, see :py:class:`~monai_segcam.SegCAM`.
        classes: the explained class index or indices.
        region: the explained region (``"pred"``, ``"label"``, ``"fp"``, ``"fn"``, a mask, a
            :py:class:`~monai_segcam.Voxel`...).
        inferer: a ``SlidingWindowInferer`` (e.g. the evaluator's) for sliding-window CAMs with the same windows;
            ``None`` or a ``SimpleInferer`` for whole-volume CAMs.
        device: where the CAM is computed (the item comes back on its own device), see ``ComputeSegCAM``.
        allow_missing_keys: skip image keys missing from the item instead of raising.
        cam_kwargs: further options of the CAM engine (``target``, ``relu``, ``multi_label``, ``output_selector``...).

    Example:
        .. code-block:: python

            postprocessing = Compose([
                SegCAMd(keys="image", network=net, pred_key="pred", cam_key="cam", classes=1, inferer=inferer),
                Activationsd(keys="pred", softmax=True),
                AsDiscreted(keys="pred", argmax=True),
                Invertd(keys=["pred", "cam"], transform=preprocessing, orig_keys="image", nearest_interp=[True, False]),
                SaveImaged(keys="cam", output_dir="out", output_postfix="cam", resample=False),
            ])
    """

    backend = ComputeSegCAM.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        network: nn.Module | None = None,
        pred_key: str | Sequence[str | None] | None = "pred",
        label_key: str | Sequence[str | None] | None = None,
        cam_key: str | Sequence[str] = "cam",
        layers: str | Sequence[str] = "pre_head",
        method: str = "hirescam",
        classes: int | Sequence[int] = 1,
        region: str | Region | torch.Tensor = "pred",
        inferer: Inferer | None = None,
        device: torch.device | str | None = None,
        allow_missing_keys: bool = False,
        **cam_kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if network is None:
            raise ValueError("SegCAMd needs the segmentation network: SegCAMd(keys='image', network=net, ...).")
        self.cam = ComputeSegCAM(network, layers, method, classes, region, inferer, device, **cam_kwargs)
        self.pred_keys = ensure_tuple_rep(pred_key, len(self.keys))
        self.label_keys = ensure_tuple_rep(label_key, len(self.keys))
        self.cam_key_bases = ensure_tuple_rep(cam_key, len(self.keys))
        layer_names = None if isinstance(layers, str) else [str(layer) for layer in ensure_tuple(layers)]
        self.layer_names = layer_names
        self.cam_keys: tuple[str, ...] = tuple(
            key for base in self.cam_key_bases for key in ([base] if layer_names is None else self._layer_keys(base))
        )
        if len(set(self.cam_keys)) != len(self.cam_keys):
            raise ValueError(f"The output keys {list(self.cam_keys)} are not unique: give one cam_key per image key.")

    def _layer_keys(self, base: str) -> list[str]:
        return [f"{base}_{layer}" for layer in self.layer_names or []]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        iterator = self.key_iterator(d, self.pred_keys, self.label_keys, self.cam_key_bases)
        for key, pred_key, label_key, cam_key in iterator:
            for role, other in (("pred_key", pred_key), ("label_key", label_key)):
                if other is not None and other not in d:
                    raise KeyError(f"SegCAMd: {role} {other!r} is not in the data (keys: {list(d)}).")
            pred = d[pred_key] if pred_key is not None else None
            label = d[label_key] if label_key is not None else None
            cams = self.cam(d[key], pred=pred, label=label)
            if isinstance(cams, dict):
                for layer, out_key in zip(self.layer_names or [], self._layer_keys(cam_key)):
                    d[out_key] = cams[layer]
            else:
                d[cam_key] = cams
        return d


class NormalizeSegCAMd(MapTransform):
    """Dictionary-based :py:class:`~monai_segcam.transforms.NormalizeSegCAM`: scale each CAM channel to [0, 1].

    Args:
        keys: the CAM key(s).
        mode: ``"minmax"`` or ``"percentile"``.
        percentiles: lower and upper percentile for ``"percentile"``.
        allow_missing_keys: skip keys missing from the item instead of raising.

    Example:
        .. code-block:: python

            NormalizeSegCAMd(keys="cam", mode="percentile", percentiles=(1, 99))
    """

    backend = NormalizeSegCAM.backend

    def __init__(
        self,
        keys: KeysCollection = "cam",
        mode: str = "minmax",
        percentiles: Sequence[float] = (1.0, 99.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = NormalizeSegCAM(mode, percentiles)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


SegCAMD = SegCAMDict = SegCAMd
NormalizeSegCAMD = NormalizeSegCAMDict = NormalizeSegCAMd
