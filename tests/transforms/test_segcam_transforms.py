# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegCAMd in real pre/postprocessing: the CAM follows the prediction back through Invertd and SaveImaged."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet
from monai.transforms import (
    AsDiscreted,
    Compose,
    CropForegroundd,
    DivisiblePadd,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    Orientationd,
    SaveImaged,
    Spacingd,
)

from monai_segcam import SegCAM
from monai_segcam.transforms import ComputeSegCAM, NormalizeSegCAM, NormalizeSegCAMd, SegCAMd

SHAPE = (24, 20, 16)
PEAK = (15, 6, 9)  # voxel of the planted evidence in the original image
# permuted axes, a flip and anisotropic spacing (0.8, 1.2, 2.5 mm)
AFFINE = np.array([[0, -1.2, 0, 30.0], [0.8, 0, 0, -10.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]])


def write_case(folder) -> str:
    """A Gaussian blob of evidence at ``PEAK`` on a low plateau (the foreground that CropForeground keeps)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1)
    image = 100 * np.exp(-(((grid - np.array(PEAK)) / np.array([3.0, 2.0, 1.5])) ** 2).sum(-1) / 2)
    image[2:-2, 2:-2, 2:-2] += 1.0
    path = os.path.join(folder, "case 1.nii.gz")
    nib.save(nib.Nifti1Image(image.astype(np.float32), AFFINE), path)
    return path


def preprocessing(divisible: int = 1) -> Compose:
    return Compose(
        [
            LoadImaged("image"),
            EnsureChannelFirstd("image"),
            Orientationd("image", "RAS", labels=None),
            Spacingd("image", (1.5, 1.5, 2.0)),
            CropForegroundd("image", "image", margin=1),
            DivisiblePadd("image", k=divisible),
        ]
    )


def local_net() -> torch.nn.Sequential:
    """A 1x1x1-conv network: class 1's logit is ``x - 50``, so its HiRes CAM at layer "0" is local."""
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1))
        net[0].bias.copy_(torch.tensor([0.0, -50.0]))
    return net


def predict(item, net):
    with torch.no_grad():
        item["pred"] = net(item["image"][None])[0]
    return item


@pytest.mark.parametrize("inferer", [None, SlidingWindowInferer((8, 8, 8), overlap=0.25)])
def test_cam_peak_lands_at_the_planted_world_position(tmp_path, inferer):
    pre = preprocessing()
    net = local_net()
    item = predict(pre({"image": write_case(tmp_path)}), net)
    assert item["image"].shape[1:] != SHAPE  # the grid really changed
    post = Compose(
        [
            SegCAMd("image", net, layers="0", classes=1, region="pred", inferer=inferer),
            Invertd(["pred", "cam"], pre, orig_keys="image", nearest_interp=False),
            SaveImaged("cam", output_dir=tmp_path, output_postfix="cam", separate_folder=False, print_log=False),
        ]
    )
    post(item)
    saved = nib.load(tmp_path / "case 1_cam.nii.gz")
    assert saved.shape == SHAPE
    np.testing.assert_allclose(saved.affine, AFFINE, atol=1e-5)
    peak = np.unravel_index(np.argmax(saved.get_fdata()), SHAPE)
    world = (AFFINE @ np.r_[PEAK, 1])[:3]
    np.testing.assert_allclose((saved.affine @ np.r_[peak, 1])[:3], world, atol=1e-4)


def test_sliding_window_cam_equals_whole_volume_for_a_local_network(tmp_path):
    item = predict(preprocessing()({"image": write_case(tmp_path)}), local_net())
    whole = SegCAMd("image", local_net(), layers="0", classes=1)(item)["cam"]
    windows = SegCAMd("image", local_net(), layers="0", classes=1, inferer=SlidingWindowInferer((8, 8, 8)))(item)["cam"]
    torch.testing.assert_close(windows.as_tensor(), whole.as_tensor(), rtol=1e-5, atol=1e-4)


def test_several_layers_one_key_each_with_meta_and_inversion(tmp_path):
    pre = preprocessing(divisible=4)
    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0)
    item = predict(pre({"image": write_case(tmp_path)}), net)
    segcam = SegCAMd("image", net, layers=["pre_head", "bottleneck"], classes=[0, 1], cam_key="cam")
    assert segcam.cam_keys == ("cam_pre_head", "cam_bottleneck")
    out = segcam(item)
    reference = SegCAM(net, layers=["pre_head", "bottleneck"])
    expected = reference(item["image"][None], classes=[0, 1], pred=item["pred"][None])
    for layer in ("pre_head", "bottleneck"):
        cam = out[f"cam_{layer}"]
        assert isinstance(cam, MetaTensor) and cam.shape == (2, *item["image"].shape[1:])
        torch.testing.assert_close(cam.as_tensor(), expected[layer][0].as_tensor())
        torch.testing.assert_close(cam.affine, item["image"].affine)
        assert len(cam.applied_operations) == len(item["image"].applied_operations)
    inverted = Invertd(list(segcam.cam_keys), pre, orig_keys="image", nearest_interp=False)(out)
    for key in segcam.cam_keys:
        assert inverted[key].shape == (2, *SHAPE)
        np.testing.assert_allclose(inverted[key].affine.numpy(), AFFINE, atol=1e-5)


def test_discrete_float_pred_and_label_regions(tmp_path):
    net = local_net()
    item = predict(preprocessing()({"image": write_case(tmp_path)}), net)
    from_logits = SegCAMd("image", net, layers="0", classes=1)(item)["cam"]
    discrete = AsDiscreted("pred", argmax=True)(dict(item))  # a float (1, *spatial) label map
    assert discrete["pred"].is_floating_point() and discrete["pred"].shape[0] == 1
    torch.testing.assert_close(SegCAMd("image", net, layers="0", classes=1)(discrete)["cam"], from_logits)

    discrete["label"] = discrete["pred"].clone()
    by_label = SegCAMd("image", net, layers="0", classes=1, region="label", label_key="label", pred_key=None)(discrete)
    torch.testing.assert_close(by_label["cam"], from_logits)
    empty = SegCAMd("image", net, layers="0", classes=1, region="fp", label_key="label")
    with pytest.warns(UserWarning, match="Empty region"):
        assert not empty(discrete)["cam"].any()  # prediction == label: no false positives


def test_array_transform_and_errors(tmp_path):
    net = local_net()
    item = predict(preprocessing()({"image": write_case(tmp_path)}), net)
    cam = ComputeSegCAM(net, layers="0", classes=[0, 1])(item["image"], pred=item["pred"])
    assert cam.shape == (2, *item["image"].shape[1:])
    with pytest.raises(ValueError, match="does not match the image grid"):
        ComputeSegCAM(net, layers="0")(item["image"], pred=item["pred"][:, 1:])
    with pytest.raises(KeyError, match="pred_key 'missing'"):
        SegCAMd("image", net, layers="0", pred_key="missing")(item)
    with pytest.raises(ValueError, match="network"):
        SegCAMd("image")
    assert "cam" not in SegCAMd("other", net, layers="0", allow_missing_keys=True)(item)
    with pytest.raises(TypeError, match="SimpleInferer or a SlidingWindowInferer"):
        SegCAMd("image", net, layers="0", inferer=torch.nn.Identity())


def test_normalize(tmp_path):
    net = local_net()
    item = predict(preprocessing()({"image": write_case(tmp_path)}), net)
    item = SegCAMd("image", net, layers="0", classes=[0, 1], region="all", relu=False)(item)
    out = NormalizeSegCAMd("cam")(item)["cam"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, item["cam"].affine)
    for channel in out:
        assert channel.min() == 0.0 and channel.max() == 1.0
    clipped = NormalizeSegCAM(mode="percentile", percentiles=(5, 95))(item["cam"].as_tensor())
    assert not isinstance(clipped, MetaTensor) and clipped.min() == 0.0 and clipped.max() == 1.0
    with pytest.raises(ValueError):
        NormalizeSegCAMd("cam", mode="zscore")


def test_a_rule_instance_names_results_and_files_by_one_rule():
    """The method name of a rule given as an object is the rule's own (``CAMRule.method_name``) in the transform, the
    handlers and the result alike, not its class name in one door and its name in another."""
    from monai_segcam.cam.methods import SegHiResCAMRule
    from monai_segcam.handlers import SegCAMComputeHandler

    class Sharper(SegHiResCAMRule):
        name = "sharper"

    net = UNet(3, 1, 3, (4, 8), (2,), num_res_units=0).eval()
    item = MetaTensor(torch.rand(1, 8, 8, 8))
    transform = ComputeSegCAM(net, layers="pre_head", method=Sharper(), classes=1)
    result = transform.engine(item[None], classes=(1,))
    assert transform.method == SegCAMComputeHandler(method=Sharper()).method == result.method == "sharper"
