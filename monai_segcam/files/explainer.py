# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Seg-CAMs of image files with a MONAI bundle or network, on each file's own voxel grid: the bundle's preprocessing
applied, the engines run on the network input, and the maps taken back with MONAI's ``Invertd`` (the pipeline of
``monai-segcam explain --bundle/--network``; nnU-Net's is :py:class:`~monai_segcam.nnunet.NNUNetSegCAM`)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from ..outputs import CaseSummary, ExplainedCase, case_rows, region_on_grid, safe_case_name
from ..utils.loading import LoadedModel, first_line
from .checks import (
    check_classes_of,
    check_label_values,
    check_network_input,
    check_volume,
    network_minimum,
    output_classes,
)
from .grids import place_region, voxels_to_grid
from .reading import read_image

__all__ = ["FileSegCAM"]


class FileSegCAM:
    """Explain image files (NIfTI, NRRD, MHA, DICOM series folders) with the engines of a loaded model, each file on
    its own grid and affine, ready for :py:func:`~monai_segcam.outputs.write_case_folder`.

    Args:
        model: the network (weights loaded, on its device), the bundle's image preprocessing (``None``: the image as
            read, through ``intensity``) and whether its outputs are independent sigmoid channels
            (:py:func:`~monai_segcam.utils.loading.load_bundle`).
        engines: method name -> engine on ``model.network``, e.g. from :py:func:`~monai_segcam.explainers.make_segcam`
            with the bundle's inferer; every engine explains the same prediction.
        predictor: the engine whose ``predict`` gives the prediction; default: the first of ``engines`` that has one.
        intensity: without preprocessing, a transform of the image as read (e.g. ``ScaleIntensityRange``).
        channels: a :py:class:`~monai_segcam.perturbation.ChannelAttribution` of the same network and windows: each
            case also gets the table of its input channels (``ExplainedCase.channel_table``) for the same classes
            and region.
        channel_names: the input channels' names (default: the bundle metadata's ``channel_def``, else
            ``channel<j>``; :py:func:`~monai_segcam.perturbation.channel_names`).

    Example:
        .. code-block:: python

            model = load_bundle("bundles/segcam_demo")
            load_checkpoint(model.network, "bundles/segcam_demo/models/model.pt")
            explainer = FileSegCAM(model, {"hirescam": make_segcam(model.network, model.inferer, layers="pre_head")})
            case = explainer("ct.nii.gz", classes=[1])  # case.maps[("pre_head", "hirescam")]: (1, *ct's shape)
            write_case_folder(CAMWriter("cams/" + case.name), case)
    """

    def __init__(
        self,
        model: LoadedModel,
        engines: Mapping[str, Any],
        predictor: Any = None,
        intensity: Callable[[torch.Tensor], torch.Tensor] | None = None,
        channels: Any = None,
        channel_names: Sequence[str] | None = None,
    ) -> None:
        self.model, self.engines, self.intensity = model, dict(engines), intensity
        self.channels, self.channel_names = channels, channel_names
        self.predictor: Any = predictor or next((e for e in self.engines.values() if hasattr(e, "predict")), None)
        if self.predictor is None:
            raise ValueError("FileSegCAM needs an engine that predicts: give a CAM engine or `predictor=`.")
        self.num_classes = output_classes(model.network, model.class_names)  # None: checked after the prediction

    @functools.cached_property
    def minimum(self) -> tuple[int, ...] | None:
        """The fewest voxels per axis of a network input (:py:func:`~monai_segcam.files.checks.network_minimum`)."""
        return network_minimum(self.model.network)

    def check_classes(self, classes: Sequence[int] | None) -> None:
        """Refuse classes that are no output of the network (when its number of outputs is known without running it),
        listing the valid ones with their names.

        Example:
            .. code-block:: python

                explainer.check_classes([5])  # ValueError: class 5 is not an output of this network: its classes ...
        """
        check_classes_of(classes, self.num_classes, self.model.class_names)

    def __call__(
        self, path: str, label: str | None = None, classes: list[int] | None = None, region: Any = "pred",
        name: str | None = None, contrast: int | None = None, prompt: Mapping[str, Any] | None = None,
    ) -> ExplainedCase:  # fmt: skip
        """Explain the image file ``path``.

        Args:
            path: the image file or DICOM series folder.
            label: the ground-truth label map file (for the ``label``, ``fp`` and ``fn`` regions, and the statistics).
            classes: the output channels explained, ``["all"]`` for every channel; default: all (multi-label), else
                all but 0.
            region: a region string (:py:func:`~monai_segcam.cam.regions.parse_region`), a voxel or box in voxel
                indices of the file; or a :py:class:`~monai_segcam.cam.regions.Region` or mask on the network grid.
            name: the case name; default: the file's name (:py:func:`~monai_segcam.outputs.safe_case_name`).
            contrast: a class ``c2``: every engine explains ``sum_M (y_c - y_c2)`` (see ``Explainer.__call__``).
            prompt: a promptable model's prompt (:py:func:`~monai_segcam.cam.prompts.parse_prompt`: ``classes``
                label ids, ``points`` voxels of the file with ``point_labels``): the explained channels are the
                prompts (the points moved onto the network grid), named by the explainer's classes.

        Raises:
            FileNotFoundError: a file does not exist.
            ValueError: a file cannot be read or preprocessed, or does not fit the network or the region.
        """
        name = name or safe_case_name(path)
        self.check_classes(classes)
        original, image, truth = self._load(path, label)
        x = torch.as_tensor(image).float()[None]
        to_grid = lambda points: voxels_to_grid(points, original.affine, image.affine)  # noqa: E731
        forward = self._prompt_on_grid(prompt, to_grid)
        logits = self.predictor.predict(x, **forward).cpu()
        channels = logits.shape[1]
        multi_label = bool(getattr(self.predictor, "multi_label", self.model.multi_label))
        default = list(range(channels)) if multi_label else (list(range(1, channels)) or [0])
        default = [c for c in default if c != contrast]  # the contrast class is not explained against itself
        classes = list(default if classes is None else range(channels) if list(classes) == ["all"] else classes)
        placed, region_summary = place_region(region, original.shape[1:], image.shape[1:], to_grid)
        call = {"classes": classes, "region": placed, "pred": logits, "label": truth, **forward}
        call.update({} if contrast is None else {"contrast": int(contrast)})
        maps, rows, modules, explained, classes = self._explain(x, call, name, path, image)
        keys = {f"cam{i}": key for i, key in enumerate(maps)}
        grid = self._to_file_grid({"pred": logits[0], **{k: maps[v] for k, v in keys.items()}}, image, path, original)
        segmentation = grid["pred"] > 0 if multi_label else grid["pred"].argmax(0)
        masks = segmentation if multi_label else np.stack([segmentation == c for c in range(channels)])
        summary = CaseSummary(
            [path], original.shape[1:], int(original.shape[0]), original.affine, image.shape, region_summary,
            {str(c): int(mask.sum()) for c, mask in enumerate(masks)}, label, image.affine,
        ).as_json()  # fmt: skip
        inverted = {key: grid[tag] for tag, key in keys.items()}
        table = None if self.channels is None else self._channel_table(x, call, name)
        drawn = region_on_grid(explained, image.affine, original.affine, original.shape[1:])
        return ExplainedCase(name, original, inverted, drawn, segmentation, rows, classes, modules, summary,
                             channel_table=table)  # fmt: skip

    @staticmethod
    def _prompt_on_grid(prompt: Mapping[str, Any] | None, to_grid: Callable[[np.ndarray], np.ndarray]) -> dict:
        """The prompt's forward arguments, its ``points`` (voxels of the file) moved onto the network grid."""
        forward = dict(prompt or {})
        if forward.get("points") is not None:
            forward["points"] = to_grid(np.asarray(forward["points"], dtype=np.float64))
        return forward

    def _explain(
        self, x: torch.Tensor, call: dict[str, Any], name: str, path: str, image: Any
    ) -> tuple[dict[tuple[str, str], torch.Tensor], list[dict[str, Any]], dict[str, str], torch.Tensor, list[int]]:
        """Every engine's maps ``(n_classes, *grid)`` by ``(layer, method)``, their statistics rows on the network
        grid, the module behind each layer key, the explained region ``(n_classes, *grid)`` and the classes explained
        (a promptable explainer's prompts)."""
        maps, rows, modules = {}, [], {}
        truth = None if call["label"] is None else call["label"][0]
        for method, engine in self.engines.items():
            try:
                result = engine(x, **call)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from exc
            by_layer = {layer: cam.as_tensor()[0] for layer, cam in result.items()}
            maps.update({(layer, method): cam for layer, cam in by_layer.items()})
            modules.update(result.modules)
            rows += case_rows(name, method, by_layer, result.classes, result.region[0] > 0, truth, image)[0]
        return maps, rows, modules, result.region[0] > 0, list(result.classes)

    def _channel_table(self, x: torch.Tensor, call: dict[str, Any], name: str) -> dict[str, Any]:
        from monai_segcam.perturbation import channel_names

        try:
            result = self.channels(x, **call)
            names = channel_names(self.channel_names or self.model.description.get("bundle"), x.shape[1])
        except ValueError as exc:
            raise ValueError(f"{name}: channel table: {exc}") from exc
        return {"rows": result.rows([name], names), "channels": names, "steps": self.channels.steps}

    def _load(self, path: str, label: str | None) -> tuple[Any, Any, Any]:
        """The input as read, the network input ``(C, *spatial)`` and the label on its grid (or ``None``)."""
        original = read_image(path)
        check_volume(original, path, self.model.network)
        if self.model.preprocessing is not None:
            try:
                image = self.model.preprocessing({"image": path})["image"]
            except Exception as exc:
                raise ValueError(f"the bundle's preprocessing failed on {path}: {first_line(exc)}") from exc
        else:
            image = original.float() if self.intensity is None else self.intensity(original.float())
        check_network_input(image, path, self.model.in_channels, self.minimum, original)
        if label is None:
            return original, image, None
        classes = None if self.model.multi_label else self.num_classes  # a multi-label map's values are no indices
        return original, image, _label_on_grid(label, image, classes)

    def _to_file_grid(
        self, outputs: dict[str, torch.Tensor], image: Any, path: str, original: Any
    ) -> dict[str, np.ndarray]:
        """Invert the bundle's spatial preprocessing on every ``(N, *spatial)`` output (linear interpolation)."""
        arrays = {key: value.detach().cpu().numpy() for key, value in outputs.items()}
        if self.model.preprocessing is not None and getattr(image, "applied_operations", None):
            from monai.transforms import Invertd

            invert = Invertd(list(outputs), self.model.preprocessing, orig_keys="image", nearest_interp=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inverted = invert({"image": image, **{k: MetaTensor(v.detach().cpu()) for k, v in outputs.items()}})
            arrays = {key: np.asarray(torch.as_tensor(inverted[key]).cpu().numpy()) for key in outputs}
        shape = tuple(original.shape[1:])
        for value in arrays.values():
            if tuple(value.shape[1:]) != shape:
                raise ValueError(f"{path}: outputs came back on a {tuple(value.shape[1:])} grid, not the input's {shape}")
        return arrays


def _label_on_grid(path: str, image: Any, num_classes: int | None) -> torch.Tensor:
    """The label map read from ``path``, its values checked against the network's classes, resampled (nearest) onto
    the network input's grid ``(1, 1, *spatial)``."""
    from monai.transforms import ResampleToMatch

    label = read_image(path, "label")
    if label.shape[0] != 1:
        raise ValueError(f"label {path} has {label.shape[0]} channels; give a single-channel label map")
    check_label_values(label, path, num_classes)
    if tuple(label.shape[1:]) != tuple(image.shape[1:]) or not torch.allclose(label.affine, image.affine, atol=1e-4):
        label = ResampleToMatch(mode="nearest")(label, image)
    return torch.as_tensor(label).round().long()[None]
