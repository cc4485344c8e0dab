# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""find_invertd / invert_like: the CAMs are inverted as the bundle's postprocessing inverts its prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Activationsd, Compose, EnsureChannelFirstd, Invertd, Spacingd

from monai_segcam.utils import find_invertd, invert_like


def test_find_invertd_instantiated_and_raw():
    pre = Spacingd("artery", (2.0, 2.0, 2.0))
    first, second = Invertd("pred", pre, orig_keys="artery"), Invertd("pred", pre, orig_keys="image")
    post = Compose([Activationsd("pred", sigmoid=True), Compose([first]), second])
    assert find_invertd(post) is first  # the first one that inverts the prediction, also inside a nested Compose
    assert find_invertd(post, key="label") is None and find_invertd(Compose([Activationsd("pred")])) is None
    raw = {"_target_": "Compose", "transforms": [{"_target_": "Invertd", "keys": "pred", "orig_keys": "artery"}]}
    assert find_invertd(raw)["orig_keys"] == "artery"
    assert find_invertd([{"_target_": "monai.transforms.Invertd", "keys": ["label"], "orig_keys": "x"}]) is None


def test_invert_like_puts_the_cam_where_the_prediction_lands():
    """A CAM on the resampled grid of a loaded phase comes back on that phase's original grid and affine."""
    affine = torch.tensor([[0.0, -1.2, 0.0, 30.0], [-1.0, 0.0, 0.0, 20.0], [0.0, 0.0, 2.0, -4.0], [0.0, 0.0, 0.0, 1.0]])
    pre = Compose([EnsureChannelFirstd("artery", channel_dim="no_channel"), Spacingd("artery", (2.0, 2.0, 2.0))])
    item = pre({"artery": MetaTensor(torch.rand(10, 12, 6), affine=affine, meta={"filename_or_obj": "p_art.nii.gz"})})
    item["image"] = MetaTensor(torch.cat([item["artery"].as_tensor()] * 2))  # a metadata-less network input
    item["cam"] = MetaTensor(torch.rand(1, *item["image"].shape[1:]))
    post = Compose([Invertd("pred", pre, orig_keys="artery"), Activationsd("pred", sigmoid=True)])
    invert = invert_like(post, ["cam"])
    assert invert.orig_keys == ("artery",) and invert.transform is pre and invert.nearest_interp == (False,)
    cam = invert(item)["cam"]
    assert cam.shape == (1, 10, 12, 6) and cam.meta["filename_or_obj"] == "p_art.nii.gz"
    np.testing.assert_allclose(cam.affine.numpy(), affine.numpy(), atol=1e-5)
    assert invert_like(Compose([Activationsd("pred", sigmoid=True)]), ["cam"]) is None  # nothing to follow
    assert invert_like(Compose([]), ["cam"], transform=pre, orig_keys="artery").orig_keys == ("artery",)
    with pytest.raises(ValueError, match="preprocessing"):
        invert_like({"_target_": "Invertd", "keys": "pred", "orig_keys": "artery"}, ["cam"])
