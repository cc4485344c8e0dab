# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Dictionary transforms computing Seg-CAMs (with their statistics) for postprocessing before ``Invertd``, saving
them after it with the one writer, and normalising them."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ensure_tuple, ensure_tuple_rep
from torch import nn

from ..outputs import CAMWriter, cam_keys, cam_output_keys, case_rows, safe_case_name
from .array import ComputeSegCAM, NormalizeSegCAM

__all__ = [
    "SegCAMd",
    "SegCAMD",
    "SegCAMDict",
    "SaveSegCAMd",
    "SaveSegCAMD",
    "SaveSegCAMDict",
    "NormalizeSegCAMd",
    "NormalizeSegCAMD",
    "NormalizeSegCAMDict",
]


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
        stats_key: when given, the item also gets the statistics rows of its CAMs under this key (one
            :py:data:`~monai_segcam.outputs.CSV_COLUMNS` dict per layer and class, from
            :py:func:`~monai_segcam.metrics.cam_statistics`, as the handlers' CSV: collect them and
            :py:func:`~monai_segcam.outputs.write_table`); a label that cannot be used leaves its columns empty.
        allow_missing_keys: skip image keys missing from the item instead of raising.
        compute_kwargs: ``layers``, ``method``, ``classes``, ``region``, ``inferer`` (e.g. the evaluator's),
            ``device`` and the CAM engine's options, by keyword: as for :py:class:`~monai_segcam.transforms.ComputeSegCAM`.

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
        stats_key: str | None = None,
        allow_missing_keys: bool = False,
        **compute_kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if network is None:
            raise ValueError("SegCAMd needs the segmentation network: SegCAMd(keys='image', network=net, ...).")
        self.cam = ComputeSegCAM(network, **compute_kwargs)
        self.pred_keys = ensure_tuple_rep(pred_key, len(self.keys))
        self.label_keys = ensure_tuple_rep(label_key, len(self.keys))
        self.cam_key_bases = ensure_tuple_rep(cam_key, len(self.keys))
        self.stats_key = stats_key
        self.cam_keys = tuple(key for base in self.cam_key_bases for key in cam_keys(base, self.cam.request.result_layers))
        if len(set(self.cam_keys)) != len(self.cam_keys):
            raise ValueError(f"The output keys {list(self.cam_keys)} are not unique: give one cam_key per image key.")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, Any]:
        d: dict[Hashable, Any] = dict(data)
        iterator = self.key_iterator(d, self.pred_keys, self.label_keys, self.cam_key_bases)
        for key, pred_key, label_key, cam_key in iterator:
            for role, other in (("pred_key", pred_key), ("label_key", label_key)):
                if other is not None and other not in d:
                    raise KeyError(f"SegCAMd: {role} {other!r} is not in the data (keys: {list(d)}).")
            pred = d[pred_key] if pred_key is not None else None
            label = d[label_key] if label_key is not None else None
            maps, region, _ = self.cam.explain(d[key], pred=pred, label=label)
            for layer, out_key in cam_output_keys(cam_key, self.cam.request.result_layers).items():
                d[out_key] = maps[layer]
            if self.stats_key is not None:
                case = safe_case_name(d[key].meta if isinstance(d[key], MetaTensor) else None)
                d[self.stats_key] = case_rows(case, self.cam.method, maps, self.cam.classes, region, label, d[key])[0]
        return d


class SaveSegCAMd(MapTransform):
    """Write the CAMs of an item (e.g. after ``Invertd``) with the one writer
    (:py:class:`~monai_segcam.outputs.CAMWriter`): ``{case}_cam_{method}_{layer}_class{c}.nii.gz`` per layer and
    class in ``output_dir``, atomically, named after the CAM's source file like the handlers' and the command line's.

    Args:
        cam_key, layers, method, classes: as given to :py:class:`SegCAMd` (the keys read are ``cam_key``, or
            ``f"{cam_key}_{layer}"`` per layer of a list: :py:func:`~monai_segcam.outputs.cam_output_keys`).
        output_dir: the folder of the files.
        allow_missing_keys: skip CAM keys missing from the item instead of raising.

    Example:
        .. code-block:: python

            SaveSegCAMd(cam_key="cam", layers=["bottleneck", "pre_head"], classes=[1, 2], output_dir="cams")
    """

    def __init__(
        self,
        cam_key: str = "cam",
        layers: str | Sequence[str] = "pre_head",
        method: str = "hirescam",
        classes: int | Sequence[int] = 1,
        output_dir: str | os.PathLike = "./",
        allow_missing_keys: bool = False,
    ) -> None:
        self.layer_keys = cam_output_keys(cam_key, layers)
        super().__init__(list(self.layer_keys.values()), allow_missing_keys)
        self.method, self.classes = method, ensure_tuple(classes)
        self.writer = CAMWriter(output_dir)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        layers = {key: layer for layer, key in self.layer_keys.items()}
        maps = {layers[key]: d[key] for key in self.key_iterator(d)}
        if maps:
            first = next(iter(maps.values()))
            case = safe_case_name(first.meta if isinstance(first, MetaTensor) else None)
            with self.writer.all_or_nothing():  # the item's files, all or none
                self.writer.write(case, self.method, maps, self.classes)
        return d


class NormalizeSegCAMd(MapTransform):
    """Dictionary-based :py:class:`~monai_segcam.transforms.NormalizeSegCAM`: scale each CAM channel to [0, 1].

    Args:
        keys: the CAM key(s).
        mode, percentiles: as for :py:class:`~monai_segcam.transforms.NormalizeSegCAM`.
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
SaveSegCAMD = SaveSegCAMDict = SaveSegCAMd
NormalizeSegCAMD = NormalizeSegCAMDict = NormalizeSegCAMd
