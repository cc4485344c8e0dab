# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""SegOcclusion against brute force (MONAI's sliding_window_inference on every occluded image), on planted evidence,
and its interface: CAMResult, files, network state, errors."""

from __future__ import annotations

import os
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer, sliding_window_inference
from monai.networks.nets import UNet

from monai_segcam import Box, Voxel
from monai_segcam.cam.regions import region_weights
from monai_segcam.cam.result import CAMResult
from monai_segcam.outputs import CAMWriter
from monai_segcam.perturbation import SegOcclusion, make_baseline, occluder_boxes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_unet(in_channels: int = 1) -> UNet:
    torch.manual_seed(0)
    return UNet(3, in_channels, 3, (4, 8), (2,), num_res_units=0).double().eval()


def brute_force(net, x, roi, overlap, mode, padding_mode, target, classes, region, mask, stride, baseline, multi):
    """The occlusion map from MONAI's sliding_window_inference on every occluded image (region fixed from the clean
    prediction), and the number of window passes it made."""
    spatial = x.shape[2:]

    def infer(image):
        roi_size = -1 if roi is None else roi
        with torch.no_grad():
            return sliding_window_inference(image, roi_size, 1, net, overlap, mode, padding_mode=padding_mode)

    def score(y):
        if target == "probabilities":
            y = torch.sigmoid(y) if multi else torch.softmax(y, 1)
        return (weights * y[:, list(classes)]).flatten(2).sum(-1)

    clean = infer(x)
    weights = region_weights(region, clean, classes, spatial, x.shape[0], multi_label=multi, warn_empty=False)
    base = make_baseline(x, baseline, 2.0)
    boxes = occluder_boxes(spatial, mask, stride)
    maps = torch.zeros((x.shape[0], len(classes), *spatial), dtype=x.dtype)
    count = torch.zeros(spatial, dtype=x.dtype)
    s0 = score(clean)
    for box in boxes:
        index = (slice(None), slice(None), *box)
        occluded = x.clone()
        occluded[index] = base[index]
        drop = s0 - score(infer(occluded))
        maps[index] += drop[(...,) + (None,) * len(spatial)]
        count[box] += 1
    windows = 1 if roi is None else len(_windows(spatial, roi, overlap))
    return maps / count.clamp_min(1), (len(boxes) + 1) * windows * x.shape[0]


def _windows(spatial, roi, overlap):
    from monai_segcam.cam import window_slices

    return window_slices(spatial, [max(r, s) if r <= 0 else r for r, s in zip(roi, spatial)], [overlap] * 3)[1]


CASES = {
    "whole volume, logits": {"roi": None, "mode": "constant", "target": "logits"},
    "windows constant, logits": {"roi": (12, 10, 16), "mode": "constant", "target": "logits"},
    "windows gaussian, probabilities": {"roi": (12, 10, 16), "mode": "gaussian", "target": "probabilities"},
    "windows gaussian, logits, mean baseline": {
        "roi": (12, 10, 16), "mode": "gaussian", "target": "logits", "baseline": "mean"
    },
    "padded constant, logits": {"roi": (24, 12, 20), "mode": "constant", "target": "logits"},
    "padded gaussian, probabilities": {"roi": (24, 12, 20), "mode": "gaussian", "target": "probabilities"},
    "padded reflect, probabilities": {"roi": (24, 12, 20), "mode": "gaussian", "target": "probabilities", "padding": "reflect"},
    "multi-label probabilities": {"roi": (12, 10, 16), "mode": "gaussian", "target": "probabilities", "multi": True},
    "no logits kept, probabilities": {"roi": (12, 10, 16), "mode": "gaussian", "target": "probabilities", "budget": 0},
    "half the logits kept, logits": {"roi": (12, 10, 16), "mode": "constant", "target": "logits", "budget": 2 * 3 * 1920 * 8},
    "box region, logits": {"roi": (12, 10, 16), "mode": "constant", "target": "logits", "region": Box((0, 0, 0), (5, 5, 5))},
    "stride above the occluder (gaps)": {"roi": (12, 10, 16), "mode": "gaussian", "target": "logits", "mask": 3, "stride": 5},
}


@pytest.mark.parametrize("case", list(CASES))
def test_equals_brute_force(case):
    """float64, so that equality tests the window re-use and the re-stitching, not float32 noise."""
    opts = {"baseline": "blur", "padding": "constant", "multi": False, "region": "pred", "budget": 1 << 30}
    opts.update(mask=6, stride=4)
    opts.update(CASES[case])
    net = tiny_unet()
    x = torch.randn(2, 1, 20, 18, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    occlusion = SegOcclusion(
        net, roi_size=opts["roi"], mask_size=opts["mask"], stride=opts["stride"], baseline=opts["baseline"], blur_sigma=2.0, mode=opts["mode"],
        target=opts["target"], padding_mode=opts["padding"], overlap=0.5, multi_label=opts["multi"], relu=False,
        batch_size=5, sw_batch_size=3, logits_budget=opts["budget"],
    )  # fmt: skip
    classes = [0, 2] if opts["multi"] else [1, 2]
    result = occlusion(x, classes=classes, region=opts["region"])
    expected, brute_passes = brute_force(
        net, x, opts["roi"], 0.5, opts["mode"], opts["padding"], opts["target"], classes, opts["region"], opts["mask"], opts["stride"],
        opts["baseline"], opts["multi"],
    )  # fmt: skip
    scale = float(expected.abs().max())
    assert scale > 0
    torch.testing.assert_close(result["input"].as_tensor(), expected, rtol=0, atol=1e-9 * scale)
    if opts["stride"] > opts["mask"]:  # voxels between occluders: 0, never NaN
        assert result.map[0, 0, 3:5].abs().max() == 0
    if opts["budget"] == 0:  # probabilities re-run each changed window's clean logits too
        return
    assert occlusion.window_passes <= brute_passes
    if opts["roi"] is not None:
        assert occlusion.window_passes < brute_passes  # an occluder re-runs only the windows it reaches


def test_windows_away_from_the_region_never_run():
    """A voxel region in the first window: occluders reaching only other windows drop nothing, and only windows
    covering the voxel run (once clean, then once per occluder that reaches them)."""
    net = tiny_unet()
    x = torch.randn(1, 1, 24, 24, 24, dtype=torch.float64)
    occlusion = SegOcclusion(net, roi_size=(12, 12, 12), overlap=0.0, mask_size=6, relu=False)
    result = occlusion(x, classes=1, region=Voxel((2, 3, 4)))
    drops = result.map[0, 0]
    assert drops[:12, :12, :12].abs().sum() > 0
    outside = drops.clone()
    outside[:12, :12, :12] = 0
    assert outside.abs().max() == 0
    assert occlusion.window_passes == 1 + 8  # the clean window, and the 8 occluders inside it


def test_result_is_saved_like_a_cam(tmp_path):
    net = tiny_unet().float()
    affine = torch.tensor([[0.0, -1.5, 0, 10], [2.0, 0, 0, -4], [0, 0, 1.25, 7], [0, 0, 0, 1]], dtype=torch.float64)
    image = MetaTensor(torch.randn(1, 1, 16, 12, 8), affine=affine, meta={"filename_or_obj": "case.nii.gz"})
    result = SegOcclusion(net, mask_size=4)(image, classes=[1, 2])
    assert isinstance(result, CAMResult)
    assert result.method == "occlusion" and result.layers == ["input"] and result.classes == (1, 2)
    assert result.modules == {}
    assert tuple(result.map.shape) == (1, 2, 16, 12, 8) and isinstance(result.map, MetaTensor)
    torch.testing.assert_close(result.map.affine, affine)
    assert result.region.shape == (1, 2, 16, 12, 8) and result.prediction.shape == (1, 3, 16, 12, 8)
    assert result.map.min() >= 0  # ReLU by default
    files = CAMWriter(tmp_path, png=False).write("case", result.method, {k: m[0] for k, m in result.items()}, [1, 2])
    (path,) = files[("input", 2)]
    assert os.path.basename(path) == "case_cam_occlusion_input_class2.nii.gz"
    saved = nib.load(path)
    np.testing.assert_allclose(saved.affine, affine.numpy())
    np.testing.assert_allclose(saved.get_fdata(), result.map[0, 1].numpy(), rtol=1e-6)


def test_network_state_restored_and_eval_during():
    torch.manual_seed(0)
    net = UNet(3, 1, 2, (4, 8), (2,), num_res_units=0, norm="batch", dropout=0.5).double().train()
    net.model[0].conv.weight.requires_grad_(False)
    flags = [p.requires_grad for p in net.parameters()]
    x = torch.randn(1, 1, 12, 12, 12, dtype=torch.float64)
    first = SegOcclusion(net, mask_size=6, relu=False)(x).map
    second = SegOcclusion(net, mask_size=6, relu=False)(x).map
    torch.testing.assert_close(first, second)  # eval mode: dropout and batch statistics off
    assert net.training and all(m.training for m in net.modules())
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(p.grad is None for p in net.parameters())


def test_empty_region_gives_zero_map_and_warning():
    net = tiny_unet()
    x = torch.randn(1, 1, 12, 12, 12, dtype=torch.float64)
    occlusion = SegOcclusion(net, roi_size=(8, 8, 8), mask_size=4, relu=False)
    with pytest.warns(UserWarning, match="Empty region"):
        result = occlusion(x, classes=1, region="empty")
    assert result.map.abs().max() == 0
    assert occlusion.window_passes == 1  # one window, for the number of output channels (classes are checked)


def test_pred_given_saves_the_prediction_pass_and_from_inferer():
    net = tiny_unet()
    x = torch.randn(1, 1, 20, 16, 16, dtype=torch.float64)
    inferer = SlidingWindowInferer((12, 12, 12), sw_batch_size=2, overlap=0.5, mode="gaussian", sigma_scale=0.2)
    occlusion = SegOcclusion.from_inferer(inferer, net, mask_size=8, relu=False)
    assert occlusion.roi_size == (12, 12, 12) and occlusion.mode == "gaussian" and occlusion.sigma_scale == 0.2
    assert occlusion.overlap == 0.5 and occlusion.sw_batch_size == 2
    with torch.no_grad():
        pred = inferer(x, net)
    given = occlusion(x, classes=[1, 2], pred=pred)
    passes_given = occlusion.window_passes
    computed = occlusion(x, classes=[1, 2])
    torch.testing.assert_close(given.map, computed.map)
    assert passes_given <= occlusion.window_passes
    label_map = occlusion(x, classes=[1, 2], pred=pred.argmax(1, keepdim=True))
    torch.testing.assert_close(label_map.map, computed.map)


def test_bad_options_raise_clear_errors():
    net = tiny_unet()
    with pytest.raises(ValueError, match="blur"):
        SegOcclusion(net, baseline="blurry")
    with pytest.raises(ValueError, match="finite"):
        SegOcclusion(net, baseline=float("nan"))
    with pytest.raises(ValueError, match="mask_size"):
        SegOcclusion(net, mask_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        SegOcclusion(net, batch_size=0)
    with pytest.raises(ValueError, match="logits"):
        SegOcclusion(net, target="logit")
    with pytest.raises(ValueError, match="overlap"):
        SegOcclusion(net, roi_size=8, overlap=1.0)(torch.zeros(1, 1, 8, 8, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="SlidingWindowInferer"):
        SegOcclusion.from_inferer(object(), net)
    x = torch.zeros(1, 1, 8, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="pred shape"):
        SegOcclusion(net)(x, pred=torch.zeros(1, 3, 8, 8, 7))
    with pytest.raises(ValueError, match="out of range"):
        SegOcclusion(net)(x, classes=3)
    with pytest.raises(ValueError, match="NaN"):
        SegOcclusion(net)(torch.full((1, 1, 8, 8, 8), float("nan")))


def test_occluding_planted_evidence_drops_the_score_there():
    """The marker network labels a structure class 2 only when a marker cube lies next to it: occluding the marker
    drops the structure's class-2 score, occluding the distractor cube far away does not."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks", "planted_evidence"))
    from common import HELD_OUT_SEED, load_network

    from monai_segcam.data.planted import make_marker_case

    seed = next(s for s in range(HELD_OUT_SEED, HELD_OUT_SEED + 50) if _usable(make_marker_case(seed=s)))
    case = make_marker_case(seed=seed)
    net = load_network("marker")
    x = torch.from_numpy(case["image"])[None]
    occlusion = SegOcclusion(net, mask_size=8, stride=4, baseline=0.0, batch_size=16, relu=False)
    result = occlusion(x, classes=2, region="pred")
    assert result.region.sum() > 20  # the structure is predicted as class 2
    drops = result.map[0, 0]
    marker, distractor = (torch.from_numpy(case[k][0]) for k in ("marker", "distractor"))
    on_marker, on_distractor = float(drops[marker].mean()), float(drops[distractor].mean())
    assert on_marker > 0.2 * float(drops.max())
    assert on_marker > 5 * abs(on_distractor)


def _usable(case) -> bool:
    return case["class"] == 2 and bool(case["distractor"].any())


def test_ensemble_with_flips_equals_brute_force():
    """Two networks under test-time flips: the explained prediction is the mean over members and flips, as for the
    CAM engines; occlusion equals brute force on that predictor."""
    nets = [tiny_unet(), UNet(3, 1, 3, (4, 8), (2,), num_res_units=0).double().eval()]
    flips = [(), (0,), (1, 2)]

    def predictor(window):
        outs = [torch.flip(net(torch.flip(window, [2 + a for a in f])), [2 + a for a in f]) for net in nets for f in flips]
        return sum(outs) / len(outs)

    x = torch.randn(1, 1, 16, 14, 12, dtype=torch.float64)
    occlusion = SegOcclusion(nets, roi_size=(10, 10, 12), flips=flips, mask_size=5, baseline="mean", relu=False)
    result = occlusion(x, classes=[1, 2])

    class Mean(torch.nn.Module):
        def forward(self, window):
            return predictor(window)

    expected, _ = brute_force(Mean(), x, (10, 10, 12), 0.25, "constant", "constant", "logits", [1, 2], "pred", 5, None,
                              "mean", False)  # fmt: skip
    torch.testing.assert_close(result.map.as_tensor(), expected, rtol=0, atol=1e-9 * float(expected.abs().max()))


def test_inside_inference_mode_like_an_evaluator_gives_the_same_map():
    net = tiny_unet()
    x = torch.randn(1, 1, 10, 12, 6, dtype=torch.float64)  # padded to the window in the last dimension
    occlusion = SegOcclusion(net, roi_size=8, mask_size=4, target="probabilities")
    expected = occlusion(x, classes=[1, 2]).map
    with torch.inference_mode():
        inside = occlusion(x.clone(), classes=[1, 2]).map
    assert expected.abs().sum() > 0
    torch.testing.assert_close(inside.as_tensor(), expected.as_tensor())
