# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""nnU-Net v2 model folders: exact whole-volume Seg-CAMs of what nnU-Net predicts.

nnU-Net deploys Gaussian-weighted tiles (step 0.5), test-time mirroring over the allowed axes and the mean logits of
several folds. :py:class:`NNUNetModel` loads a model folder with nnU-Net's own code (``nnunetv2``, an optional
dependency: ``pip install monai-segcam[nnunet]``), :py:func:`nnunet_window_grid` gives its tiles to the sliding-window
engine, and :py:class:`NNUNetSegCAM` explains the averaged, mirrored, stitched prediction and returns the maps on the
original image with nnU-Net's own inverse of its preprocessing.

A MONAI bundle converted from an nnU-Net model (``monai.apps.nnunet.convert_nnunet_to_monai_bundle``) loads the same
way. Importing this package does not import nnU-Net; using it without nnU-Net raises an ``ImportError`` saying how to
install it.

Example:
    .. code-block:: python

        from monai_segcam.nnunet import NNUNetModel, NNUNetSegCAM

        model = NNUNetModel("nnUNet_results/Dataset001_X/nnUNetTrainer__nnUNetPlans__3d_fullres", folds=[0, 1, 2, 3, 4])
        explanation = NNUNetSegCAM(model, layers="pre_head")(["case_0000.nii.gz", "case_0001.nii.gz"])
        explanation.save("cams/")
        for name, files in group_cases(["imagesTs/"], model.num_input_channels):  # a folder of cases
            NNUNetSegCAM(model, layers="pre_head")(files).save("cams/", name)
"""

from __future__ import annotations

from ._require import INSTALL_HINT, require_nnunet
from .cases import group_cases
from .explain import NNUNetExplanation, NNUNetSegCAM, explain_nnunet_case, file_affine
from .model import (
    NNUNetCase,
    NNUNetModel,
    available_folds,
    load_checkpoint,
    monai_bundle_models,
    nnunet_layer_presets,
)
from .tiles import nnunet_window_grid

__all__ = [
    "NNUNetModel",
    "NNUNetCase",
    "NNUNetSegCAM",
    "NNUNetExplanation",
    "group_cases",
    "nnunet_window_grid",
    "nnunet_layer_presets",
    "load_checkpoint",
    "available_folds",
    "monai_bundle_models",
    "explain_nnunet_case",
    "file_affine",
    "require_nnunet",
    "INSTALL_HINT",
]
