# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Occlusion through the front doors: make_segcam, the transforms, SegCAMInferer, SegCAMHandler and the CLI."""

from __future__ import annotations

import csv
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

from monai_segcam.explainers import make_segcam
from monai_segcam.handlers import SegCAMHandler, SegCAMOutputHandler
from monai_segcam.inferers import SegCAMInferer
from monai_segcam.perturbation import CHANNEL_COLUMNS, ChannelAttribution, SegOcclusion
from monai_segcam.transforms import SegCAMd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AFFINE = np.array([[-1.5, 0, 0, 20.0], [0, 0, 1.0, -8.0], [0, 2.0, 0, 4.0], [0, 0, 0, 1]])


def make_net(in_channels: int = 1) -> UNet:
    torch.manual_seed(0)
    return UNet(3, in_channels, 2, channels=(4, 8), strides=(2,), num_res_units=0).eval()


def image(seed: int = 0, shape=(16, 14, 12)) -> MetaTensor:
    data = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed))
    data[:, 4:10, 5:11, 3:8] += 2.0
    return MetaTensor(data, affine=torch.from_numpy(AFFINE), meta={"filename_or_obj": f"case{seed}.nii.gz"})


def test_make_segcam_and_transform():
    net = make_net()
    inferer = SlidingWindowInferer((8, 8, 8), overlap=0.5, mode="gaussian")
    engine = make_segcam(net, inferer, layers="pre_head", method="occlusion", mask_size=4, relu=False)
    assert isinstance(engine, SegOcclusion) and engine.roi_size == (8, 8, 8) and engine.mode == "gaussian"
    assert isinstance(make_segcam(net, None, method="occlusion"), SegOcclusion)
    img = image()
    with torch.no_grad():
        pred = inferer(img[None], net)[0]
    item = SegCAMd(keys="image", network=net, method="occlusion", classes=1, inferer=inferer, mask_size=4, relu=False)(
        {"image": img, "pred": pred}
    )
    expected = engine(img[None], classes=1, pred=pred[None]).map[0]
    assert isinstance(item["cam"], MetaTensor) and item["cam"].shape == (1, 16, 14, 12)
    torch.testing.assert_close(item["cam"].as_tensor(), expected.as_tensor())
    torch.testing.assert_close(item["cam"].affine, img.affine)


def test_inferer_keeps_the_occlusion_map_for_the_output_handler():
    net = make_net()
    data = [{"image": image(i)} for i in range(2)]
    inferer = SegCAMInferer(SlidingWindowInferer((8, 8, 8)), method="occlusion", classes=1, mask_size=4)
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), DataLoader(Dataset(data), batch_size=2), net, inferer=inferer,
        val_handlers=[SegCAMOutputHandler()],
    )  # fmt: skip
    seen: dict = {}

    @evaluator.on(IterationEvents.FORWARD_COMPLETED)
    def keep(engine):
        seen.update(engine.state.output)

    evaluator.run()
    expected = SegOcclusion(net, roi_size=(8, 8, 8), mask_size=4)(seen["image"], classes=1, pred=seen["pred"])
    assert seen["cam"].shape == (2, 1, 16, 14, 12)
    torch.testing.assert_close(seen["cam"].as_tensor(), expected.map.as_tensor())


def test_handler_writes_occlusion_maps_like_cams(tmp_path):
    files = []
    for i in range(2):
        path = tmp_path / f"case {i}.nii.gz"
        nib.save(nib.Nifti1Image(image(i)[0].numpy(), AFFINE), path)
        files.append({"image": str(path)})
    net = make_net()
    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])
    out = tmp_path / "cams"
    handler = SegCAMHandler(method="occlusion", classes=[1], output_dir=out, mask_size=4, stride=2, baseline="mean")
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), DataLoader(Dataset(files, pre), batch_size=1), net,
        inferer=SlidingWindowInferer((8, 8, 8)), val_handlers=[handler],
    )  # fmt: skip
    evaluator.run()
    loaded = pre(files[1])["image"]
    expected = SegOcclusion(net, (8, 8, 8), mask_size=4, stride=2, baseline="mean")(loaded[None], classes=1)
    saved = nib.load(out / "case_1_cam_occlusion_input_class1.nii.gz")
    np.testing.assert_allclose(saved.affine, AFFINE, atol=1e-6)
    np.testing.assert_allclose(saved.get_fdata(), expected.map[0, 0].numpy(), rtol=1e-5, atol=1e-5)
    with open(out / "segcam_stats.csv", newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row["status"] == "ok"]
    assert [(row["case"], row["layer"], row["method"]) for row in rows] == [
        ("case_0", "input", "occlusion"), ("case_1", "input", "occlusion")
    ]  # fmt: skip


def test_cli_occlusion_and_channel_table(tmp_path):
    """``explain --method occlusion hirescam --channel-table`` on a two-channel NIfTI: the occlusion map equals the
    engine's on the same input, the CSV ranks what ChannelAttribution ranks."""
    net = make_net(in_channels=2)
    args = {"spatial_dims": 3, "in_channels": 2, "out_channels": 2, "channels": [4, 8], "strides": [2],
            "num_res_units": 0}  # fmt: skip
    torch.save(net.state_dict(), tmp_path / "net.pt")
    data = np.stack([image(0)[0].numpy(), image(1)[0].numpy()], -1)
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "two.nii.gz")
    command = [
        sys.executable, "-m", "monai_segcam", "explain", str(tmp_path / "two.nii.gz"), "--network",
        "monai.networks.nets.UNet", "--network-args", json.dumps(args), "--checkpoint", str(tmp_path / "net.pt"),
        "--method", "occlusion", "hirescam", "--classes", "1", "--roi-size", "8", "--mask-size", "4",
        "--baseline", "mean", "--channel-table", "--channel-names", "T1", "FLAIR", "--steps", "4", "--no-png",
        "--quiet", "--output", str(tmp_path / "out"),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / "two"
    x = torch.from_numpy(np.moveaxis(data, -1, 0))[None]
    expected = SegOcclusion(net, (8, 8, 8), mask_size=4, baseline="mean")(x, classes=1).map[0, 0]
    saved = nib.load(folder / "two_cam_occlusion_input_class1.nii.gz")
    np.testing.assert_allclose(saved.get_fdata(), expected.numpy(), rtol=1e-4, atol=1e-4)
    assert (folder / "two_cam_hirescam_pre_head_class1.nii.gz").exists()
    with open(folder / "two_channels.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == CHANNEL_COLUMNS and [row["channel_name"] for row in rows] == ["T1", "FLAIR"]
    result = ChannelAttribution(net, (8, 8, 8), baseline="mean", steps=4)(x, classes=1)
    for j, row in enumerate(rows):
        for method in ("drop", "input_x_gradient", "integrated_gradients"):
            assert np.isclose(float(row[method]), float(result.scores[method][0, 0, j]), rtol=1e-4, atol=1e-4)
    summary = json.loads((folder / "two_segcam.json").read_text())
    kinds = {entry["file"]: entry["kind"] for entry in summary["files"]}
    assert kinds["two_channels.csv"] == "channel_table"
    assert summary["settings"]["perturbation"]["baseline"] == "mean"
