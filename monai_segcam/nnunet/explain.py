# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Exact Seg-CAMs of what an nnU-Net v2 model predicts: its folds averaged, its mirrorings, its tiles.

nnU-Net's prediction of a preprocessed case is ``Y = mean_m mean_f sum_w beta_w flip_f(net_m(flip_f(x_w)))`` over
the folds ``m``, the mirror sets ``f`` (every subset of the allowed axes) and its Gaussian-weighted tiles ``w``.
:py:class:`NNUNetSegCAM` explains the region score of exactly that ``Y`` with
:py:class:`~monai_segcam.SlidingWindowSegCAM` given the folds as an ensemble, the mirror sets as flips and nnU-Net's
tiles as the window grid; the region comes from nnU-Net's own prediction (``nnUNetPredictor``), and the maps go back
to the original image with nnU-Net's own resampling and crop reversal, then onto the input file's voxel grid and
affine.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from ..cam.result import CAMResult
from ..cam.sliding_window import SlidingWindowSegCAM
from ..files.grids import place_region
from ..files.reading import file_affine, read_image
from ..outputs import CAMWriter, CaseSummary, ExplainedCase, case_rows, safe_case_name
from ..utils.loading import first_line
from .model import NNUNetCase, NNUNetModel, nnunet_layer_presets

__all__ = ["NNUNetSegCAM", "NNUNetExplanation", "explain_nnunet_case", "file_affine"]


@dataclass
class NNUNetExplanation:
    """The CAMs of one case, on the preprocessed grid and on the input file's grid.

    Attributes:
        case: the preprocessed case (nnU-Net's properties included).
        result: the engine's result on the preprocessed grid (maps per layer, region, prediction).
        logits: nnU-Net's own prediction on the preprocessed grid ``(K, *grid)``.
        segmentation: nnU-Net's exported segmentation, in the file's voxel order ``(I, J, K)``.
        maps: per layer, the maps ``(n_classes, I, J, K)`` in the file's voxel order (float32).
        region: the explained region of each class taken back like the maps, ``(n_classes, I, J, K)`` (bool: the
            voxels where the resampled region weights exceed 0.5).
        affine: the input file's voxel-to-world (RAS) affine, shared by ``segmentation`` and ``maps``.
    """

    case: NNUNetCase
    result: CAMResult
    logits: torch.Tensor
    segmentation: np.ndarray
    maps: dict[str, np.ndarray]
    region: np.ndarray
    affine: np.ndarray

    @property
    def classes(self) -> tuple[int, ...]:
        """The explained output channels, in the order of the maps' first axis."""
        return self.result.classes

    def save(self, output_dir: str | os.PathLike, name: str | None = None) -> list[str]:
        """Write ``{name}_seg.nii.gz`` and ``{name}_cam_{method}_{layer}_class{c}.nii.gz`` into ``output_dir`` with
        the input's affine, by the one writer (:py:class:`~monai_segcam.outputs.CAMWriter`, atomically); returns the
        paths written."""
        name = safe_case_name(name or self.case.name)
        writer = CAMWriter(output_dir)
        paths = [writer.write_segmentation(name, self.segmentation, self.affine)]
        for written in writer.write(name, self.result.method, self.maps, self.classes, self.affine).values():
            paths += written
        return paths


class NNUNetSegCAM:
    """Seg-CAMs of an nnU-Net v2 model as it predicts: folds averaged, test-time mirroring, nnU-Net's tiles.

    Args:
        model: the loaded model folder (its folds, mirroring and tile settings are used).
        layers: layer names of nnU-Net's network or the roles ``pre_head``, ``bottleneck``, ``encoder.N``,
            ``decoder.N`` (see :py:func:`~monai_segcam.nnunet.model.nnunet_layer_presets`).
        method, target, relu, method_kwargs: as :py:class:`~monai_segcam.SlidingWindowSegCAM`.
        sw_batch_size: tiles per forward pass.
        device: where the volume-sized maps are accumulated (default: the model's device).
        progress: show progress bars.

    Example:
        .. code-block:: python

            model = NNUNetModel(folder, folds=[0, 1, 2, 3, 4])
            explanation = NNUNetSegCAM(model, layers="pre_head", method="hirescam")(["case_0000.nii.gz"], classes=[1])
            explanation.save("cams/")  # case_seg.nii.gz, case_cam_hirescam_pre_head_class1.nii.gz
    """

    def __init__(
        self,
        model: NNUNetModel,
        layers: str | Sequence[str] = "pre_head",
        method: str = "hirescam",
        target: str = "logits",
        relu: bool = True,
        sw_batch_size: int = 1,
        device: torch.device | str | None = None,
        progress: bool = False,
        **method_kwargs: Any,
    ) -> None:
        self.model = model
        requested = [layers] if isinstance(layers, str) else list(layers)
        presets = nnunet_layer_presets(model.networks[0])
        self.layer_names = {presets.get(layer, layer): layer for layer in requested}
        if len(self.layer_names) != len(requested):
            raise ValueError(f"Layers {requested} name a layer twice.")
        self.engine = SlidingWindowSegCAM(
            model.networks, roi_size=model.patch_size, layers=list(self.layer_names), method=method, target=target,
            relu=relu, sw_batch_size=sw_batch_size, sw_device=model.device, device=device or model.device,
            progress=progress, multi_label=model.multi_label, flips=model.flips, window_grid=model.window_grid,
            **method_kwargs,
        )  # fmt: skip

    def __call__(
        self,
        files: Sequence[str | os.PathLike],
        classes: int | Sequence[int] | None = None,
        region: Any = "pred",
        label: str | os.PathLike | None = None,
    ) -> NNUNetExplanation:
        """Preprocess a case (one file per channel), predict it with nnU-Net and explain ``classes`` in ``region``.

        ``region`` is given on the preprocessed grid (a region kind, a mask or a :py:class:`~monai_segcam.Voxel` /
        :py:class:`~monai_segcam.Box`; :py:meth:`NNUNetModel.file_voxels_to_grid` maps file voxels onto it);
        ``label`` is the ground truth file for the ``"label"``, ``"fp"`` and ``"fn"`` regions.
        """
        case = self.model.preprocess(files, label)
        return self.explain(case, classes, region)

    def explain(
        self,
        case: NNUNetCase,
        classes: int | Sequence[int] | None = None,
        region: Any = "pred",
        logits: torch.Tensor | None = None,
    ) -> NNUNetExplanation:
        """Explain a preprocessed case; ``logits`` (nnU-Net's prediction of it) is computed when not given."""
        model = self.model
        logits = model.predict(case.data) if logits is None else logits
        result = self.explain_on_grid(case, logits, classes, region)
        maps = {
            layer: model.to_file_order(model.to_original(cam[0], case)) for layer, cam in result.items()
        }  # fmt: skip
        region = model.to_file_order(model.to_original(result.region[0].float(), case)) > 0.5
        segmentation = model.to_file_order(model.segmentation(logits, case), channel_first=False)
        return NNUNetExplanation(case, result, logits, segmentation, maps, region, file_affine(case.files[0]))

    def explain_on_grid(
        self, case: NNUNetCase, logits: torch.Tensor, classes: int | Sequence[int] | None = None, region: Any = "pred"
    ) -> CAMResult:
        """The engine's result on the preprocessed grid, the region built from nnU-Net's prediction ``logits``
        (its argmax, or its positive channels for region-based models), the layer keys as requested."""
        classes = self.model.default_classes if classes is None else classes
        logits = torch.as_tensor(logits).float()
        pred = (logits > 0)[None] if self.model.multi_label else logits.argmax(0)[None, None]
        label = None if case.label is None else case.label[None]
        result = self.engine(case.data[None], classes=classes, region=region, pred=pred, label=label)
        maps = {self.layer_names[key]: value for key, value in result.items()}
        modules = {self.layer_names[key]: name for key, name in result.modules.items()}
        return dataclasses.replace(result, maps=maps, modules=modules)


def explain_nnunet_case(
    cams: Mapping[str, NNUNetSegCAM], files: Sequence[str], label: str | None = None,
    classes: Sequence[int] | None = None, region: str = "pred", name: str | None = None,
) -> ExplainedCase:  # fmt: skip
    """Preprocess, predict and explain one case (one file per channel) with every method's engine, on the input
    file's grid, ready for :py:func:`~monai_segcam.outputs.write_case_folder` (the nnU-Net counterpart of
    :py:class:`~monai_segcam.files.FileSegCAM`, with the same :py:class:`~monai_segcam.outputs.CaseSummary`); the
    statistics rows on the network (preprocessed) grid with the label there, as every other front door's.

    Args:
        cams: method name -> :py:class:`NNUNetSegCAM` of one model.
        files: the case's image files, one per input channel.
        label: the ground-truth file (``"label"``, ``"fp"``, ``"fn"`` regions).
        classes: the explained output channels; default: the model's foreground classes.
        region: a region string (:py:func:`~monai_segcam.cam.regions.parse_region`), voxels given in the file's.
        name: the case name; default: nnU-Net's (the first file's name without its channel suffix).

    Example:
        .. code-block:: python

            case = explain_nnunet_case({"hirescam": NNUNetSegCAM(model)}, ["case_0000.nii.gz"], classes=[1])
    """
    model = next(iter(cams.values())).model
    try:
        case = model.preprocess(files, label)
    except Exception as exc:
        raise ValueError(f"nnU-Net's preprocessing failed on {files[0]}: {first_line(exc)}") from exc
    name = name or safe_case_name(case.name)
    logits = model.predict(case.data)
    classes = list(classes if classes is not None else model.default_classes)
    shape = tuple(reversed(case.properties["shape_before_cropping"]))  # the file's (I, J, K)
    to_grid = partial(model.file_voxels_to_grid, case=case)
    placed, region_summary = place_region(region, shape, case.data.shape[1:], to_grid)
    explanations, rows = {}, []
    for method, cam in cams.items():
        try:
            explanations[method] = explained = cam.explain(case, classes, placed, logits)
        except ValueError as exc:
            raise ValueError(f"{files[0]}: {exc}") from exc
        on_grid = {layer: cam[0] for layer, cam in explained.result.items()}  # the network grid, as FileSegCAM's
        rows += case_rows(name, method, on_grid, classes, explained.result.region[0] > 0, case.label, case.data)[0]
    first = next(iter(explanations.values()))
    maps = {(layer, m): cam for m, explained in explanations.items() for layer, cam in explained.maps.items()}
    modules = {k: v for explained in explanations.values() for k, v in explained.result.modules.items()}
    seg = first.segmentation
    original = read_image(files[0])
    summary = CaseSummary(
        files, seg.shape, len(files), first.affine, case.data.shape, region_summary,
        {str(c): int((seg == c).sum()) for c in np.unique(seg).tolist()}, label,
    ).as_json()  # fmt: skip
    return ExplainedCase(name, original, maps, first.region, seg, rows, classes, modules, summary)
