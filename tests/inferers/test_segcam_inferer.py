# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegCAMInferer inside a real SupervisedEvaluator (which runs inferers under torch.no_grad)."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.networks.nets import UNet
from monai.transforms import Invertd, SpatialPadd

from monai_segcam import SegCAM, SlidingWindowSegCAM
from monai_segcam.handlers import SegCAMOutputHandler
from monai_segcam.inferers import SegCAMInferer


def make_net() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=0)


def make_data(n: int = 2, shape=(16, 16, 12)) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    affine = torch.diag(torch.tensor([1.5, 1.0, 2.0, 1.0], dtype=torch.float64))
    data = []
    for i in range(n):
        image = torch.randn((1, *shape), generator=generator)
        image[:, 4:10, 5:11, 3:8] += 2.0
        data.append({"image": MetaTensor(image, affine=affine, meta={"filename_or_obj": f"case{i}.nii.gz"})})
    return data


def run(inferer, handlers, n: int = 2) -> tuple[SupervisedEvaluator, dict]:
    net = make_net()
    loader = DataLoader(Dataset(make_data(n)), batch_size=n)
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), loader, net, inferer=inferer, val_handlers=handlers
    )
    seen: dict = {}

    @evaluator.on(IterationEvents.FORWARD_COMPLETED)
    def keep(engine):  # registered after the handlers: sees what they wrote
        seen.update(engine.state.output)
        seen["grad_enabled"] = torch.is_grad_enabled()

    evaluator.run()
    return evaluator, seen


def test_whole_volume_inferer_in_evaluator():
    inferer = SegCAMInferer(layers="pre_head", classes=[0, 1])
    evaluator, seen = run(inferer, [SegCAMOutputHandler()])
    image, pred, cam = seen["image"], seen["pred"], seen["cam"]
    expected_pred = SimpleInferer()(image, evaluator.network)
    torch.testing.assert_close(pred.as_tensor(), expected_pred.as_tensor())
    expected = SegCAM(evaluator.network, layers="pre_head")(image, classes=[0, 1], pred=pred).map
    assert cam.shape == (2, 2, *image.shape[2:]) and cam.any()
    torch.testing.assert_close(cam.as_tensor(), expected.as_tensor())
    assert isinstance(pred, MetaTensor) and torch.equal(pred.affine, image.affine)
    assert cam.is_batch and torch.equal(cam.affine, image.affine)
    assert inferer.last_cam is None  # handed over to the output
    assert all(p.grad is None for p in evaluator.network.parameters())


def test_sliding_window_inferer_reuses_the_stitched_prediction():
    window = SlidingWindowInferer(roi_size=(8, 8, 8), overlap=0.25, mode="gaussian")
    inferer = SegCAMInferer(window, layers=["pre_head", "bottleneck"], classes=1)
    evaluator, seen = run(inferer, [SegCAMOutputHandler()], n=1)
    image, pred = seen["image"], seen["pred"]
    torch.testing.assert_close(pred.as_tensor(), window(image, evaluator.network).as_tensor())
    expected = SlidingWindowSegCAM.from_inferer(window, evaluator.network, layers=["pre_head", "bottleneck"])(
        image, classes=1, pred=pred
    )
    for layer in ("pre_head", "bottleneck"):
        torch.testing.assert_close(seen[f"cam_{layer}"].as_tensor(), expected[layer].as_tensor())


def test_cam_goes_through_postprocessing_inversion():
    pad = SpatialPadd("image", (20, 20, 16))
    data = [pad(item) for item in make_data()]
    net = make_net()
    post = Invertd(["pred", "cam"], pad, orig_keys="image", nearest_interp=False)
    evaluator = SupervisedEvaluator(
        torch.device("cpu"), DataLoader(Dataset(data), batch_size=2), net,
        inferer=SegCAMInferer(classes=1), val_handlers=[SegCAMOutputHandler()], postprocessing=post,
    )  # fmt: skip
    evaluator.run()
    for item in evaluator.state.output:
        assert item["cam"].shape == (1, 16, 16, 12) and item["pred"].shape == (2, 16, 16, 12)


def test_errors():
    with pytest.raises(TypeError, match="SimpleInferer or a SlidingWindowInferer"):
        SegCAMInferer(torch.nn.Identity())
    with pytest.raises(ValueError, match="extra arguments"):
        SegCAMInferer()(make_data(1)[0]["image"][None], make_net(), "extra")
    with pytest.raises(TypeError, match="SegCAMInferer"):
        run(SimpleInferer(), [SegCAMOutputHandler()])
