# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The explainer contract: a new explainer kind is one module and one registry entry. A toy kind, installed as a
package would install it (a module and a ``monai_segcam.explainers`` entry point on the path), runs through the
transform, the handler, the bundle overlay and the command line, none of which knows it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from test_segcam_bundles import OVERLAY, SPLEEN_LIKE, _env, copy_fixture_bundle

from monai_segcam.explainers import ExplainRequest, explainer_methods
from monai_segcam.handlers import SegCAMHandler
from monai_segcam.transforms import SegCAMd

TOY = '''
"""A toy explainer kind: the image's channel sum inside the explained region (a map of the input)."""
import torch

from monai_segcam.cam.base import Explainer
from monai_segcam.cam.regions import as_region, region_weights
from monai_segcam.cam.result import CAMResult, as_image_map
from monai_segcam.explainers import ExplainerKind, register_explainer


class RegionIntensity(Explainer):
    result_keys = ("input",)
    method_name = "toy"

    def __init__(self, network):
        self.network = network

    def settings(self):
        return {"method": "toy"}

    def predict(self, image):
        with torch.no_grad():
            return self.network(image)

    def _call(self, image, classes, region, pred, label):
        classes = tuple(int(c) for c in ([classes] if isinstance(classes, int) else classes))
        logits = self.predict(image) if pred is None else pred
        weights = region_weights(as_region(region), logits, classes, image.shape[2:], len(image), label)
        maps = torch.as_tensor(image).sum(1, keepdim=True) * weights
        return CAMResult({"input": as_image_map(maps, image)}, classes, "toy", weights, logits)


register_explainer(ExplainerKind("toy", lambda network, request: RegionIntensity(network),
                                 result_keys=lambda request: ("input",)))
'''
AFFINE = np.array([[-1.5, 0, 0, 20.0], [0, 0, 1.0, -8.0], [0, 2.0, 0, 4.0], [0, 0, 0, 1]])
NET_ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2],
            "num_res_units": 0}  # fmt: skip


@pytest.fixture
def toy_path(tmp_path, monkeypatch):
    """A folder with the toy module and its entry point (``*.dist-info/entry_points.txt``), on ``sys.path``."""
    folder = tmp_path / "plugins"
    (folder / "segcam_toy-0.1.dist-info").mkdir(parents=True)
    (folder / "segcam_toy.py").write_text(textwrap.dedent(TOY))
    (folder / "segcam_toy-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: segcam-toy\nVersion: 0.1\n")
    (folder / "segcam_toy-0.1.dist-info" / "entry_points.txt").write_text("[monai_segcam.explainers]\ntoy = segcam_toy\n")
    monkeypatch.syspath_prepend(str(folder))
    return folder


def toy_map(image: torch.Tensor, pred: torch.Tensor, c: int) -> np.ndarray:
    """The toy's map of class ``c``: the image inside the voxels predicted as ``c``."""
    return (image.sum(0) * (pred.argmax(0) == c)).numpy()


def make_net() -> UNet:
    torch.manual_seed(0)
    return UNet(**NET_ARGS).eval()


def case(seed: int) -> MetaTensor:
    data = torch.randn((1, 16, 14, 12), generator=torch.Generator().manual_seed(seed))
    data[:, 4:10, 5:11, 3:8] += 2.0
    return MetaTensor(data, affine=torch.from_numpy(AFFINE), meta={"filename_or_obj": f"case{seed}.nii.gz"})


def test_the_entry_point_registers_the_kind(toy_path):
    assert ExplainRequest(method="toy", layers=("pre_head", "bottleneck")).result_layers == "input"
    assert "toy" in explainer_methods()


def test_toy_through_the_transform(toy_path):
    net, img = make_net(), case(0)
    with torch.no_grad():
        pred = net(img[None])[0]
    item = SegCAMd(keys="image", network=net, method="toy", classes=1, layers=["bottleneck", "pre_head"])(
        {"image": img, "pred": pred}
    )
    assert isinstance(item["cam"], MetaTensor) and item["cam"].shape == (1, 16, 14, 12)
    np.testing.assert_allclose(item["cam"][0].numpy(), toy_map(img, pred, 1), rtol=1e-6)
    assert item["cam"].affine.numpy().tolist() == AFFINE.tolist()


def test_toy_through_the_handler(toy_path, tmp_path):
    files = []
    for i in range(2):
        nib.save(nib.Nifti1Image(case(i)[0].numpy(), AFFINE), tmp_path / f"case{i}.nii.gz")
        files.append({"image": str(tmp_path / f"case{i}.nii.gz")})
    net, out = make_net(), tmp_path / "cams"
    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])
    handler = SegCAMHandler(method="toy", classes=[1], output_dir=out, save_png=False)
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), DataLoader(Dataset(files, pre), batch_size=1), net,
        inferer=SlidingWindowInferer((8, 8, 8)), val_handlers=[handler],
    )  # fmt: skip
    evaluator.run()
    loaded = pre(files[1])["image"]
    with torch.no_grad():
        pred = SlidingWindowInferer((8, 8, 8))(loaded[None], net)[0]
    saved = nib.load(out / "case1_cam_toy_input_class1.nii.gz")
    np.testing.assert_allclose(saved.get_fdata(), toy_map(loaded, pred, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_toy_through_the_bundle_overlay(toy_path, tmp_path):
    root = copy_fixture_bundle(SPLEEN_LIKE, tmp_path / "spleen_like")
    (root / "data" / "imagesTs").mkdir(parents=True)
    volume = np.random.default_rng(0).normal(50, 60, (48, 40, 20)).astype(np.int16)
    affine = np.diag([1.2, 1.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), root / "data" / "imagesTs" / "spleen_0.nii.gz")
    env = _env()
    env["PYTHONPATH"] = f"{toy_path}:{env['PYTHONPATH']}"
    configs = "['configs/inference.json', " + repr(str(OVERLAY)) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir",
               str(root / "data"), "--output_dir", str(tmp_path / "eval"), "--cam_method", "toy",
               "--cam_save_png", "False"]  # fmt: skip
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    saved = nib.load(tmp_path / "eval" / "spleen_0_cam_toy_input_class1.nii.gz")
    assert saved.shape == volume.shape and np.allclose(saved.affine, affine, atol=1e-4)


@pytest.mark.slow
def test_toy_through_the_command_line(toy_path, tmp_path):
    net, img = make_net(), case(0)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    nib.save(nib.Nifti1Image(img[0].numpy(), AFFINE), tmp_path / "ct.nii.gz")
    env = _env()
    env["PYTHONPATH"] = f"{toy_path}:{env['PYTHONPATH']}"
    command = [sys.executable, "-m", "monai_segcam", "explain", str(tmp_path / "ct.nii.gz"), "--network",
               "monai.networks.nets.UNet", "--network-args", json.dumps(NET_ARGS), "--checkpoint",
               str(tmp_path / "net.pt"), "--method", "toy", "--classes", "1", "--no-png", "--quiet",
               "--output", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    saved = nib.load(tmp_path / "out" / "ct" / "ct_cam_toy_input_class1.nii.gz")
    with torch.no_grad():
        pred = net(img[None])[0]
    np.testing.assert_allclose(saved.get_fdata(), toy_map(img, pred, 1), rtol=1e-5, atol=1e-6)
