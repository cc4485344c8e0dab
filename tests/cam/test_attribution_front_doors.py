# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Input attributions and ``contrast`` through the front doors: the transforms, SegCAMInferer, SegCAMHandler and the
command line give the engines' maps (result key ``"input"``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from monai_segcam import SlidingWindowSegCAM
from monai_segcam.handlers import SegCAMHandler, SegCAMOutputHandler
from monai_segcam.inferers import SegCAMInferer
from monai_segcam.transforms import SegCAMd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AFFINE = np.array([[-1.5, 0, 0, 20.0], [0, 0, 1.0, -8.0], [0, 2.0, 0, 4.0], [0, 0, 0, 1]])
ROI = (8, 8, 8)


def make_net() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0).eval()


def image(seed: int = 0, shape=(16, 14, 12)) -> MetaTensor:
    data = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed))
    data[:, 4:10, 5:11, 3:8] += 2.0
    return MetaTensor(data, affine=torch.from_numpy(AFFINE), meta={"filename_or_obj": f"case{seed}.nii.gz"})


def test_transform_with_an_input_attribution_and_a_contrast():
    net = make_net()
    inferer = SlidingWindowInferer(ROI, overlap=0.5, mode="gaussian")
    img = image()
    with torch.no_grad():
        pred = inferer(img[None], net)[0]
    item = SegCAMd(keys="image", network=net, method="integrated_gradients", classes=1, inferer=inferer, n_steps=3,
                   relu=False, contrast=2)({"image": img, "pred": pred})  # fmt: skip
    engine = SlidingWindowSegCAM(net, ROI, method="integrated_gradients", n_steps=3, relu=False, overlap=0.5,
                                 mode="gaussian")  # fmt: skip
    expected = engine(img[None], classes=1, pred=pred[None], contrast=2)["input"][0]
    plain = engine(img[None], classes=1, pred=pred[None])["input"][0]
    assert isinstance(item["cam"], MetaTensor) and item["cam"].shape == (1, 16, 14, 12)
    torch.testing.assert_close(item["cam"].as_tensor(), expected.as_tensor())
    assert not torch.allclose(item["cam"].as_tensor(), plain.as_tensor())


def test_inferer_keeps_the_gradient_map_for_the_output_handler():
    net = make_net()
    data = [{"image": image(i)} for i in range(2)]
    inferer = SegCAMInferer(SlidingWindowInferer(ROI), method="gradient", classes=1, relu=False, contrast=0)
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), DataLoader(Dataset(data), batch_size=2), net, inferer=inferer,
        val_handlers=[SegCAMOutputHandler()],
    )  # fmt: skip
    seen: dict = {}

    @evaluator.on(IterationEvents.FORWARD_COMPLETED)
    def keep(engine):
        seen.update(engine.state.output)

    evaluator.run()
    expected = SlidingWindowSegCAM(net, ROI, method="gradient", relu=False)(seen["image"], classes=1, contrast=0)
    assert seen["cam"].shape == (2, 1, 16, 14, 12)
    torch.testing.assert_close(seen["cam"].as_tensor(), expected["input"].as_tensor())


def test_handler_writes_input_x_gradient_maps_like_cams(tmp_path):
    files = []
    for i in range(2):
        path = tmp_path / f"case {i}.nii.gz"
        nib.save(nib.Nifti1Image(image(i)[0].numpy(), AFFINE), path)
        files.append({"image": str(path)})
    net = make_net()
    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])
    out = tmp_path / "cams"
    handler = SegCAMHandler(method="input_x_gradient", classes=[1], output_dir=out, contrast=2)
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), DataLoader(Dataset(files, pre), batch_size=1), net,
        inferer=SlidingWindowInferer(ROI), val_handlers=[handler],
    )  # fmt: skip
    evaluator.run()
    loaded = pre(files[1])["image"]
    expected = SlidingWindowSegCAM(net, ROI, method="input_x_gradient")(loaded[None], classes=1, contrast=2)
    saved = nib.load(out / "case_1_cam_input_x_gradient_input_class1.nii.gz")
    np.testing.assert_allclose(saved.get_fdata(), expected["input"][0, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_cli_input_attributions_beside_a_cam_with_a_contrast(tmp_path):
    net = make_net()
    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
            "num_res_units": 0}  # fmt: skip
    torch.save(net.state_dict(), tmp_path / "net.pt")
    nib.save(nib.Nifti1Image(image(0)[0].numpy(), AFFINE), tmp_path / "one.nii.gz")
    command = [
        sys.executable, "-m", "monai_segcam", "explain", str(tmp_path / "one.nii.gz"), "--network",
        "monai.networks.nets.UNet", "--network-args", json.dumps(args), "--checkpoint", str(tmp_path / "net.pt"),
        "--method", "gradient", "hirescam", "--contrast", "0", "--roi-size", "8", "--no-png", "--quiet",
        "--output", str(tmp_path / "out"),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / "one"
    x = torch.from_numpy(np.asarray(nib.load(tmp_path / "one.nii.gz").dataobj))[None, None].float()
    expected = SlidingWindowSegCAM(net, ROI, method="gradient")(x, classes=[1, 2], contrast=0)["input"][0]
    for i, c in enumerate((1, 2)):  # the default classes: all but 0, and never the contrast class
        saved = nib.load(folder / f"one_cam_gradient_input_class{c}.nii.gz")
        np.testing.assert_allclose(saved.get_fdata(), expected[i].numpy(), rtol=1e-4, atol=1e-6)
        assert (folder / f"one_cam_hirescam_pre_head_class{c}.nii.gz").exists()


def test_cli_contrast_with_nnunet_is_refused_with_a_clear_message(tmp_path, capsys):
    from monai_segcam.cli import main

    args = ["explain", str(tmp_path / "case_0000.nii.gz"), "--nnunet", str(tmp_path), "--contrast", "0", "--output",
            str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 1
    assert "--contrast is not available with --nnunet" in capsys.readouterr().err
