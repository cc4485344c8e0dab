# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Long evaluation runs: 200 CAM calls in a loop keep memory flat and leave the network exactly as it was."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from helpers_reliability import (
    assert_detached,
    assert_untouched,
    live_tensors,
    rss_mb,
    set_mixed_state,
    small_unet,
    snapshot,
)

from monai_segcam import Box, SegCAM, SlidingWindowSegCAM

ITERATIONS = 200
RSS_NOISE_MB = 30.0
TENSOR_NOISE = 10  # a leak of one tensor per call shows as >= ITERATIONS


def _long_run(cams, image: torch.Tensor, net: torch.nn.Module) -> None:
    before = set_mixed_state(net)
    regions = itertools.cycle(["pred", "all", Box((0, 0, 0), (4, 4, 4)), "empty"])
    calls = itertools.cycle(cams)

    def step():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the "empty" region warns, by design
            return next(calls)(image, classes=[1, 2], region=next(regions))

    for _ in range(2 * len(cams) * 4):  # warm-up: allocator pools, lazily built MONAI caches
        step()
    rss0, tensors0 = rss_mb(), live_tensors()
    for _ in range(ITERATIONS):
        maps = step()
        assert_detached(maps)
    del maps
    rss1, tensors1 = rss_mb(), live_tensors()
    assert rss1 - rss0 < RSS_NOISE_MB, f"RSS grew by {rss1 - rss0:.1f} MB over {ITERATIONS} calls"
    assert tensors1 - tensors0 < TENSOR_NOISE, f"{tensors1 - tensors0} more live tensors after {ITERATIONS} calls"
    assert_untouched(net, before)


def test_segcam_long_run_is_flat_and_leaves_no_trace():
    """200 SegCAM calls (local, global-weight and gradient-free rules, several layers and regions) on a network in a
    mixed train/eval + frozen/trainable state: flat RSS and live-tensor count, no hooks, state and flags restored,
    no parameter .grad, no graph kept on the maps."""
    net = small_unet()
    image = torch.randn(1, 1, 8, 8, 8)
    cams = [
        SegCAM(net, layers="pre_head", method="hirescam"),
        SegCAM(net, layers=["model.0", "bottleneck"], method="gradcam"),
        SegCAM(net, layers="pre_head", method="eigencam"),
    ]
    _long_run(cams, image, net)


def test_sliding_window_long_run_is_flat_and_leaves_no_trace():
    """200 SlidingWindowSegCAM calls (two windows each; local and two-phase global rules, also the recompute path
    with a zero activation budget) keep memory flat and leave the network as it was."""
    net = small_unet()
    image = torch.randn(1, 1, 8, 8, 8)
    cams = [
        SlidingWindowSegCAM(net, roi_size=(8, 8, 4), overlap=0.0, method="hirescam"),
        SlidingWindowSegCAM(net, roi_size=(8, 8, 4), overlap=0.0, method="gradcam", mode="gaussian"),
        SlidingWindowSegCAM(net, roi_size=(8, 8, 4), overlap=0.0, method="xgradcam", activation_budget=0),
    ]
    _long_run(cams, image, net)


@pytest.mark.parametrize("engine", ["segcam", "sliding_window"])
def test_batchnorm_network_in_train_mode_is_not_updated(engine):
    """A CAM of a network in train mode runs it in eval mode: BatchNorm running statistics are not updated, the
    region comes from the eval-mode prediction (the same map as for the network in eval mode), and the train flag
    is restored."""
    net = small_unet(norm="batch")
    image = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            net(torch.randn(2, 1, 8, 8, 8) * 3 + 1)
    make = (lambda: SegCAM(net)) if engine == "segcam" else (lambda: SlidingWindowSegCAM(net, roi_size=(8, 8, 4)))
    net.eval()
    expected = make()(image, classes=[1, 2]).map
    net.train()
    before = set_mixed_state(net)
    net.train()
    before["training"] = [m.training for m in net.modules()]
    maps = make()(image, classes=[1, 2]).map
    assert_untouched(net, before)
    torch.testing.assert_close(maps.as_tensor(), expected.as_tensor())


def test_handler_long_run_is_flat_and_leaves_no_trace(tmp_path):
    """200 batches through a real SupervisedEvaluator with SegCAMHandler (CAMs into the engine output and a CSV):
    flat RSS and live-tensor count, and the network left as it was."""
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator

    from monai_segcam import SegCAMHandler

    net = small_unet()
    data = [{"image": torch.randn(1, 8, 8, 8)} for _ in range(ITERATIONS)]

    def evaluator(cases):
        handler = SegCAMHandler(layers=["pre_head", "bottleneck"], classes=[1, 2], region="all", output_dir=tmp_path)
        return SupervisedEvaluator("cpu", DataLoader(cases), net, val_handlers=[handler], decollate=False)

    set_mixed_state(net)
    before = snapshot(net.eval())  # MONAI's evaluator itself resets mixed train/eval flags (eval_mode restores the root)
    evaluator(data[:20]).run()  # warm-up
    rss0, tensors0 = rss_mb(), live_tensors()
    evaluator = evaluator(data)
    evaluator.run()
    assert evaluator.state.iteration == ITERATIONS and evaluator.state.output["cam_pre_head"].shape[1] == 2
    evaluator.state.output = evaluator.state.batch = None
    rss1, tensors1 = rss_mb(), live_tensors()
    assert rss1 - rss0 < RSS_NOISE_MB, f"RSS grew by {rss1 - rss0:.1f} MB over {ITERATIONS} batches"
    assert tensors1 - tensors0 < TENSOR_NOISE, f"{tensors1 - tensors0} more live tensors after {ITERATIONS} batches"
    assert_untouched(net, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_allocated_memory_is_flat():
    """On CUDA, 200 calls of either engine leave torch.cuda.memory_allocated() where it was after warm-up."""
    net = small_unet().cuda()
    image = torch.randn(1, 1, 16, 16, 16, device="cuda")
    for cam in (SegCAM(net, layers=["pre_head", "bottleneck"], method="gradcam"),
                SlidingWindowSegCAM(net, roi_size=8, method="hirescam", sw_device="cuda", device="cuda")):
        cam(image, classes=[1, 2], region="all")
        torch.cuda.synchronize()
        allocated = torch.cuda.memory_allocated()
        for _ in range(ITERATIONS):
            maps = cam(image, classes=[1, 2], region="all")
        del maps
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() <= allocated, type(cam).__name__
