# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""A trained nnU-Net v2 model folder, loaded and run with nnU-Net's own code.

A model folder is ``<trainer>__<plans>__<configuration>/`` with ``plans.json``, ``dataset.json`` and
``fold_<k>/checkpoint_final.pth``. :py:class:`NNUNetModel` builds the network with the trainer's own
``build_network_architecture`` from the plans, loads each chosen fold's weights (``torch.load(weights_only=True)``),
and keeps an ``nnUNetPredictor`` initialised with them. Everything nnU-Net does to a case is done by nnU-Net:

- preprocessing: the configuration's preprocessor (``run_case``: reading with the plans' reader, transpose, crop to
  the non-zero region, resampling to the target spacing, normalisation), also for a ground-truth label;
- the prediction: ``nnUNetPredictor.predict_logits_from_preprocessed_data`` (tiles, Gaussian, mirroring, folds);
- the way back: ``convert_predicted_logits_to_segmentation_with_correct_shape`` for the segmentation, and for
  CAMs the configuration's ``resampling_fn_probabilities`` (how nnU-Net resamples its probabilities), acvl_utils'
  ``insert_crop_into_image`` (how nnU-Net reverts the crop; voxels cropped away were never seen by the network and
  get 0) and the plans' ``transpose_backward``.

Arrays "in the original space" are in nnU-Net's order of the original image (SimpleITK's ``(z, y, x)``);
:py:meth:`NNUNetModel.to_file_order` turns them into the order of the file's voxel indices ``(i, j, k)``, the order
nibabel and MONAI's ``LoadImage`` use, so they are written with the affine MONAI reads.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..cam.terms import mirror_flips
from ._require import require_nnunet
from .tiles import nnunet_window_grid

__all__ = [
    "NNUNetModel",
    "NNUNetCase",
    "load_checkpoint",
    "available_folds",
    "monai_bundle_models",
    "nnunet_layer_presets",
]

_FILE_ORDER_READERS = ("SimpleITKIO", "NibabelIO")  # both give the file's voxel axes reversed
_BUNDLE_CHECKPOINT = "nnunet_checkpoint.pth"  # a MONAI bundle's nnU-Net settings (trainer, init_args, mirroring)


def _numpy_scalar_globals() -> list:
    """What a checkpoint's numpy scalars (nnU-Net logs its Dice as ``np.float32``) need under ``weights_only``:
    numpy's scalar constructor and dtypes, no code."""
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed the package
    scalar = core.multiarray.scalar
    names = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    kinds = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_)
    return names + [type(np.dtype(kind)) for kind in kinds]


def load_checkpoint(
    path: str | os.PathLike, required: Sequence[str] = ("network_weights", "trainer_name", "init_args")
) -> dict[str, Any]:
    """An nnU-Net checkpoint (``network_weights``, ``init_args``, ``trainer_name``,
    ``inference_allowed_mirroring_axes``, ...) read with ``torch.load(weights_only=True)`` on the CPU.

    Only tensors, containers, numbers, strings, ``torch.device`` and numpy scalars are accepted: a checkpoint holding
    anything else (code) is refused rather than executed. ``required`` are the keys it must have.

    Example:
        .. code-block:: python

            folder = "nnUNet_results/Dataset001_X/nnUNetTrainer__nnUNetPlans__3d_fullres"
            checkpoint = load_checkpoint(f"{folder}/fold_0/checkpoint_final.pth")
            checkpoint["inference_allowed_mirroring_axes"]  # (0, 1, 2)
    """
    with torch.serialization.safe_globals(_numpy_scalar_globals()):
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise ValueError(f"{path} cannot be read safely as an nnU-Net checkpoint: {reason}") from exc
    missing = set(required) - set(checkpoint)
    if missing:
        raise ValueError(f"{path} is not an nnU-Net v2 checkpoint: it lacks {sorted(missing)}.")
    return checkpoint


def available_folds(folder: str | os.PathLike, checkpoint_name: str = "checkpoint_final.pth") -> list[int | str]:
    """The folds of a model folder that hold ``checkpoint_name`` (``fold_all`` only when no numbered fold has one).

    Example:
        .. code-block:: python

            available_folds("nnUNet_results/Dataset001_X/nnUNetTrainer__nnUNetPlans__3d_fullres")  # [0, 1, 2, 3, 4]
    """
    folds: list[int | str] = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("fold_") and os.path.isfile(os.path.join(folder, name, checkpoint_name)):
            suffix = name[len("fold_") :]
            folds.append(int(suffix) if suffix.isdigit() else suffix)
    numbered: list[int | str] = sorted(f for f in folds if isinstance(f, int))
    return numbered or [f for f in folds if f == "all"]


def monai_bundle_models(folder: str | os.PathLike) -> str | None:
    """The folder holding an nnU-Net model converted to a MONAI bundle by
    ``monai.apps.nnunet.convert_nnunet_to_monai_bundle`` (``models/`` with ``plans.json``, ``dataset.json``,
    ``nnunet_checkpoint.pth`` and ``fold_<k>/model.pt``), given the bundle or its ``models/``; ``None`` otherwise.

    Example:
        .. code-block:: python

            monai_bundle_models("bundles/spleen_nnunet")  # 'bundles/spleen_nnunet/models'
    """
    for candidate in (os.path.join(os.fspath(folder), "models"), os.fspath(folder)):
        if os.path.isfile(os.path.join(candidate, _BUNDLE_CHECKPOINT)):
            return candidate
    return None


def nnunet_layer_presets(network: nn.Module) -> dict[str, str]:
    """Role presets of nnU-Net's U-Nets (``dynamic_network_architectures``: ``PlainConvUNet``,
    ``ResidualEncoderUNet``, ...): ``encoder.N`` and ``bottleneck`` are ``encoder.stages.N`` (the deepest is the
    bottleneck), ``decoder.N`` is ``decoder.stages.N`` and ``pre_head`` the last decoder stage, whose output the
    segmentation layer reads. Empty for other networks.

    Example:
        .. code-block:: python

            nnunet_layer_presets(model.networks[0])["pre_head"]  # 'decoder.stages.4'
    """
    encoder, decoder = getattr(network, "encoder", None), getattr(network, "decoder", None)
    enc_stages, dec_stages = getattr(encoder, "stages", None), getattr(decoder, "stages", None)
    if not isinstance(enc_stages, nn.Sequential) or not isinstance(dec_stages, (nn.ModuleList, nn.Sequential)):
        return {}
    n_enc, n_dec = len(enc_stages), len(dec_stages)
    roles = {f"encoder.{i}": f"encoder.stages.{i}" for i in range(n_enc - 1)}
    roles["bottleneck"] = f"encoder.stages.{n_enc - 1}"
    roles.update({f"decoder.{i}": f"decoder.stages.{i}" for i in range(n_dec)})
    roles["pre_head"] = f"decoder.stages.{n_dec - 1}"
    return roles


@dataclass
class NNUNetCase:
    """One case after nnU-Net's preprocessing.

    Attributes:
        files: the input files, one per channel (``case_0000.nii.gz``, ``case_0001.nii.gz``, ...).
        data: the preprocessed image ``(C, *grid)`` (float32), the network input.
        properties: nnU-Net's properties of the case (spacing, crop box, shapes, reader metadata), needed to go back.
        label: the ground truth on the preprocessed grid ``(1, *grid)`` (int64), or ``None``.
    """

    files: list[str]
    data: torch.Tensor
    properties: dict[str, Any] = field(repr=False)
    label: torch.Tensor | None = None

    @property
    def name(self) -> str:
        """The case identifier: the first file's name without nnU-Net's ``_0000`` channel suffix and extension."""
        base = os.path.basename(self.files[0])
        for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".tif", ".tiff", ".png"):
            if base.lower().endswith(suffix):
                base = base[: -len(suffix)]
                break
        stem, _, channel = base.rpartition("_")
        return stem if stem and len(channel) == 4 and channel.isdigit() else base


class NNUNetModel:
    """A trained nnU-Net v2 model folder: the chosen folds' networks, the plans and the predictor, from nnU-Net.

    Args:
        folder: the model folder ``<trainer>__<plans>__<configuration>/``, or a MONAI bundle made from one by
            ``monai.apps.nnunet.convert_nnunet_to_monai_bundle`` (see :py:func:`monai_bundle_models`).
        folds: the folds to average (``[0, 1, 2, 3, 4]``, ``["all"]``); ``None`` takes every fold with a checkpoint.
        checkpoint_name: the file in each ``fold_<k>/``: ``checkpoint_final.pth`` (default) or
            ``checkpoint_best.pth``; in a MONAI bundle ``model.pt`` (default) or ``best_model.pt``.
        use_mirroring: test-time mirroring over the checkpoint's ``inference_allowed_mirroring_axes`` (all their
            subsets, the identity included, averaged: nnU-Net's default).
        tile_step_size: nnU-Net's tile step as a fraction of the patch (0.5 by default).
        use_gaussian: Gaussian blending of the tiles (nnU-Net's default).
        device: where the networks and nnU-Net's predictor run (``"cuda"``, ``"cpu"``).

    Example:
        .. code-block:: python

            model = NNUNetModel("nnUNet_results/Dataset004_Hippocampus/nnUNetTrainer__nnUNetPlans__3d_fullres", [0, 1])
            case = model.preprocess(["hippocampus_017_0000.nii.gz"])
            logits = model.predict(case.data)  # nnU-Net's own prediction on the preprocessed grid
            seg = model.segmentation(logits, case)  # in the original space, as nnU-Net exports it
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        folds: Sequence[int | str] | None = None,
        checkpoint_name: str | None = None,
        use_mirroring: bool = True,
        tile_step_size: float = 0.5,
        use_gaussian: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        plans_handler = require_nnunet("nnunetv2.utilities.plans_handling.plans_handler")
        self.folder = os.fspath(folder)
        bundle_models = monai_bundle_models(self.folder)
        self.source = bundle_models or self.folder  # where plans.json, dataset.json and fold_<k>/ are
        self.checkpoint_name = checkpoint_name or ("model.pt" if bundle_models else "checkpoint_final.pth")
        checkpoint_name = self.checkpoint_name
        for name in ("plans.json", "dataset.json"):
            if not os.path.isfile(os.path.join(self.source, name)):
                raise FileNotFoundError(
                    f"{self.folder} is not an nnU-Net v2 model folder: {name} is missing (expected "
                    "<trainer>__<plans>__<configuration>/ with plans.json, dataset.json and fold_<k>/)."
                )
        self.folds = list(folds) if folds is not None else available_folds(self.source, checkpoint_name)
        if not self.folds:
            raise FileNotFoundError(f"No fold_<k>/{checkpoint_name} in {self.source}.")
        settings = load_checkpoint(os.path.join(self.source, _BUNDLE_CHECKPOINT), ("trainer_name", "init_args")) \
            if bundle_models else {}  # fmt: skip
        checkpoints = [{**settings, **self._checkpoint(fold, checkpoint_name, bool(settings))} for fold in self.folds]
        with open(os.path.join(self.source, "plans.json")) as f:
            self.plans_manager = plans_handler.PlansManager(json.load(f))
        with open(os.path.join(self.source, "dataset.json")) as f:
            self.dataset_json = json.load(f)
        self.trainer_name = checkpoints[0]["trainer_name"]
        self.configuration_name = checkpoints[0]["init_args"]["configuration"]
        self.configuration_manager = self.plans_manager.get_configuration(self.configuration_name)
        self._check_configuration()
        self.label_manager = self.plans_manager.get_label_manager(self.dataset_json)
        axes = checkpoints[0].get("inference_allowed_mirroring_axes")
        self.mirror_axes: tuple[int, ...] = tuple(int(a) for a in axes) if use_mirroring and axes else ()
        self.tile_step_size, self.use_gaussian = tile_step_size, use_gaussian
        self.device = torch.device(device)
        architecture = self._build_network()
        self.networks = [self._member(architecture, c["network_weights"]) for c in checkpoints]
        self.predictor = self._predictor(architecture, [c["network_weights"] for c in checkpoints], use_mirroring)

    def _checkpoint(self, fold: int | str, checkpoint_name: str, weights_only_file: bool) -> dict[str, Any]:
        """A fold's checkpoint; a MONAI bundle's holds only the weights (``{"network_weights": ...}`` or the state
        dict itself), its settings being in ``nnunet_checkpoint.pth``."""
        path = os.path.join(self.source, f"fold_{fold}", checkpoint_name)
        if not os.path.isfile(path):
            found = available_folds(self.source, checkpoint_name)
            raise FileNotFoundError(f"{path} does not exist; folds with {checkpoint_name}: {found}.")
        if not weights_only_file:
            return load_checkpoint(path)
        weights = load_checkpoint(path, required=())
        return weights if "network_weights" in weights else {"network_weights": weights}

    def _check_configuration(self) -> None:
        if self.configuration_manager.previous_stage_name is not None:
            raise NotImplementedError(
                f"{self.configuration_name} is a cascade stage: it needs the previous stage's segmentation as input, "
                "which this package does not run; explain the 3d_fullres or 3d_lowres model instead."
            )
        if len(self.configuration_manager.patch_size) != 3:
            raise NotImplementedError(
                f"{self.configuration_name} is a 2D configuration (it predicts slice by slice); the CAM engines "
                "explain 3D configurations (3d_fullres, 3d_lowres)."
            )

    def _build_network(self) -> nn.Module:
        """The trainer's own ``build_network_architecture`` from the plans, deep supervision off (as nnU-Net infers)."""
        label_handling = require_nnunet("nnunetv2.utilities.label_handling.label_handling")
        find_objects = require_nnunet("nnunetv2.utilities.find_objects")
        trainer = find_objects.recursive_find_trainer_class_by_name(self.trainer_name)
        pm, cm = self.plans_manager, self.configuration_manager
        inputs = label_handling.determine_num_input_channels(pm, cm, self.dataset_json)
        outputs = self.label_manager.num_segmentation_heads
        if "plans_manager" in inspect.signature(trainer.build_network_architecture).parameters:
            return trainer.build_network_architecture(pm, cm, inputs, outputs, enable_deep_supervision=False)
        return trainer.build_network_architecture(  # the signature of nnU-Net before 2.6
            cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import,
            inputs, outputs, enable_deep_supervision=False,
        )  # fmt: skip

    def _member(self, architecture: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
        network = copy.deepcopy(architecture)
        network.load_state_dict(weights)
        return network.eval().to(self.device)

    def _predictor(self, architecture: nn.Module, weights: list[dict], use_mirroring: bool) -> Any:
        """nnU-Net's predictor with these folds (its own copy of the network, whose weights it swaps per fold)."""
        predict = require_nnunet("nnunetv2.inference.predict_from_raw_data")
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a note about CPU devices
            predictor = predict.nnUNetPredictor(
                tile_step_size=self.tile_step_size, use_gaussian=self.use_gaussian, use_mirroring=use_mirroring,
                perform_everything_on_device=self.device.type == "cuda", device=self.device, verbose=False,
                allow_tqdm=False,
            )  # fmt: skip
        predictor.manual_initialization(
            copy.deepcopy(architecture), self.plans_manager, self.configuration_manager, weights, self.dataset_json,
            self.trainer_name, self.mirror_axes or None,
        )  # fmt: skip
        return predictor

    @property
    def patch_size(self) -> tuple[int, ...]:
        """The configuration's patch size (the tile size)."""
        return tuple(int(p) for p in self.configuration_manager.patch_size)

    @property
    def flips(self) -> list[tuple[int, ...]]:
        """The test-time flips nnU-Net averages: every subset of the mirroring axes, the identity first."""
        return mirror_flips(self.mirror_axes)

    @property
    def num_input_channels(self) -> int:
        """The number of image channels (files) a case has."""
        return len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))

    @property
    def multi_label(self) -> bool:
        """Whether the outputs are nnU-Net regions (independent sigmoid channels) rather than softmax classes."""
        return bool(self.label_manager.has_regions)

    @property
    def class_names(self) -> dict[int, str]:
        """Output channel -> name in ``dataset.json`` (for regions, the region's name; the background included
        for softmax outputs)."""
        labels = {k: v for k, v in self.dataset_json["labels"].items() if k != "ignore"}
        if self.multi_label:
            names = [k for k, v in labels.items() if v not in (0, [0], (0,))]
            return dict(enumerate(names))
        return {int(v): k for k, v in labels.items()}

    @property
    def default_classes(self) -> list[int]:
        """The channels explained by default: every foreground class (every region for region-based models)."""
        heads = self.label_manager.num_segmentation_heads
        return list(range(heads)) if self.multi_label else list(range(1, heads))

    def window_grid(self, spatial_shape: Sequence[int]) -> Any:
        """nnU-Net's tiles of a preprocessed case (a :py:class:`~monai_segcam.cam.windows.WindowGrid`)."""
        return nnunet_window_grid(self.patch_size, self.tile_step_size, self.use_gaussian, self.device)(spatial_shape)

    def preprocess(self, files: Sequence[str | os.PathLike], label: str | os.PathLike | None = None) -> NNUNetCase:
        """Preprocess one case with the configuration's own preprocessor (``run_case``).

        Args:
            files: one image file per channel, in channel order (nnU-Net's ``_0000``, ``_0001``, ... files).
            label: a ground-truth label map, preprocessed like nnU-Net's training labels (crop and resampling).
        """
        paths = [str(os.fspath(f)) for f in files]
        if len(paths) != self.num_input_channels:
            raise ValueError(
                f"The model expects {self.num_input_channels} channel file(s) per case "
                f"({self.dataset_json.get('channel_names')}), got {len(paths)}: {paths}."
            )
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        args = (self.plans_manager, self.configuration_manager, self.dataset_json)
        with contextlib.redirect_stdout(io.StringIO()):
            data, _, properties = preprocessor.run_case(paths, None, *args)
            seg = preprocessor.run_case(paths, os.fspath(label), *args)[1] if label is not None else None
        ground_truth = None if seg is None else torch.from_numpy(np.clip(seg, 0, None).astype(np.int64))
        data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        return NNUNetCase(paths, data, properties, ground_truth)

    def predict(self, data: torch.Tensor) -> torch.Tensor:
        """nnU-Net's own prediction of a preprocessed case ``(C, *grid)``: the logits ``(K, *grid)`` averaged over
        the folds and mirrorings, stitched over its tiles (``predict_logits_from_preprocessed_data``), on the CPU in
        nnU-Net's dtype (float16: nnU-Net sums in float16, and its export resamples them so)."""
        logits = self.predictor.predict_logits_from_preprocessed_data(torch.as_tensor(data))
        return logits.cpu().clone()  # a normal tensor (nnU-Net's comes from inference mode)

    def segmentation(self, logits: torch.Tensor, case: NNUNetCase) -> np.ndarray:
        """The segmentation in the original space, exactly as nnU-Net exports it
        (``convert_predicted_logits_to_segmentation_with_correct_shape``)."""
        export = require_nnunet("nnunetv2.inference.export_prediction")
        return export.convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, self.plans_manager, self.configuration_manager, self.label_manager, case.properties
        )

    def to_original(self, maps: torch.Tensor | np.ndarray, case: NNUNetCase) -> np.ndarray:
        """Maps ``(N, *grid)`` on the preprocessed grid -> ``(N, *original)``: nnU-Net's resampling of
        probabilities, its crop reverted (0 outside the crop box), its transpose reverted."""
        bounding_boxes = require_nnunet("acvl_utils.cropping_and_padding.bounding_boxes")
        props, transpose = case.properties, self.plans_manager.transpose_forward
        maps = maps.detach().float().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, np.float32)
        original_spacing = [props["spacing"][i] for i in transpose]
        resampled = self.configuration_manager.resampling_fn_probabilities(
            maps, props["shape_after_cropping_and_before_resampling"], self.configuration_manager.spacing,
            original_spacing,
        )  # fmt: skip
        resampled = resampled.cpu().numpy() if isinstance(resampled, torch.Tensor) else np.asarray(resampled)
        full = np.zeros((maps.shape[0], *props["shape_before_cropping"]), dtype=np.float32)
        box = props["bbox_used_for_cropping"]
        full = bounding_boxes.insert_crop_into_image(full, resampled.astype(np.float32), box)
        return full.transpose([0] + [i + 1 for i in self.plans_manager.transpose_backward])

    def to_file_order(self, array: np.ndarray, channel_first: bool = True) -> np.ndarray:
        """An array in the original space (nnU-Net's axis order) in the order of the file's voxel indices
        ``(i, j, k)`` (nibabel's and MONAI's), channels kept first."""
        reader = self.plans_manager.image_reader_writer_class.__name__
        if reader not in _FILE_ORDER_READERS:
            raise NotImplementedError(
                f"Writing maps for images read with {reader} is not supported (supported: {_FILE_ORDER_READERS})."
            )
        lead = 1 if channel_first else 0
        return np.ascontiguousarray(array.transpose(list(range(lead)) + list(range(array.ndim - 1, lead - 1, -1))))

    def file_voxels_to_grid(self, points: np.ndarray, case: NNUNetCase) -> np.ndarray:
        """Voxel indices ``(N, 3)`` of the input file (nibabel/MONAI order) -> continuous voxel coordinates on the
        preprocessed grid: nnU-Net's axis order, transpose, crop offset, and the resampling's voxel-centre scaling."""
        props = case.properties
        points = np.asarray(points, dtype=np.float64)[:, ::-1]  # nnU-Net's order of the original image
        points = points[:, list(self.plans_manager.transpose_forward)]
        start = np.array([low for low, _ in props["bbox_used_for_cropping"]], dtype=np.float64)
        before = np.array(props["shape_after_cropping_and_before_resampling"], dtype=np.float64)
        after = np.array(case.data.shape[1:], dtype=np.float64)
        return (points - start + 0.5) * after / before - 0.5
