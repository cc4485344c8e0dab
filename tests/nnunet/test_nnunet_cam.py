# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The CAM of an nnU-Net model is the exact CAM of its averaged, mirrored, stitched prediction.

The reference (``nnunet_reference.py``) differentiates nnU-Net's prediction written out plainly in float64 (its
padding, tiles, float16 Gaussian, mirrorings and folds) with one ``autograd.grad``; it shares no code with the
engines.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("nnunetv2", reason="nnU-Net v2 is an optional dependency (pip install monai-segcam[nnunet])")

from nnunet_reference import reference

from monai_segcam import SlidingWindowSegCAM
from monai_segcam.nnunet import NNUNetModel, NNUNetSegCAM, nnunet_window_grid

pytestmark = pytest.mark.slow  # the session fixture trains a tiny nnU-Net (about 30 s)


@pytest.fixture(scope="module")
def files(nnunet_case):
    return [nnunet_case["image0"], nnunet_case["image1"]]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def reference_map(model, case, layer, region, channel=1):
    cotangent = torch.zeros((model.label_manager.num_segmentation_heads, *case.data.shape[1:]))
    cotangent[channel] = region
    return reference(model.networks, model.mirror_axes, model.patch_size, case.data, layer, cotangent)


@pytest.mark.parametrize("region", ["pred", "label"])
def test_two_folds_mirrored_equals_autograd(nnunet_folder, nnunet_case, files, region):
    model = NNUNetModel(nnunet_folder, folds=[0, 1])
    case = model.preprocess(files, label=nnunet_case["label"])
    logits = model.predict(case.data)
    cam = NNUNetSegCAM(model, layers=["pre_head", "encoder.1"], method="hirescam", relu=False)
    result = cam.explain_on_grid(case, logits, classes=[1], region=region)
    mask = result.region[0, 0]
    expected_mask = logits.argmax(0) == 1 if region == "pred" else case.label[0] == 1
    assert torch.equal(mask.bool(), expected_mask) and 0 < int(mask.sum()) < mask.numel()
    for key, module in [("pre_head", "decoder.stages.1"), ("encoder.1", "encoder.stages.1")]:
        _, expected = reference_map(model, case, module, mask)
        assert expected.abs().max() > 0
        assert relative_error(result[key][0, 0], expected[0]) < 1e-4, key  # 4e-7 with the seeded model folder


def test_one_fold_without_mirroring_is_the_plain_sliding_window_cam(nnunet_folder, files):
    model = NNUNetModel(nnunet_folder, folds=[0], use_mirroring=False)
    case = model.preprocess(files)
    logits = model.predict(case.data)
    ours = NNUNetSegCAM(model, layers="pre_head", relu=False).explain_on_grid(case, logits, classes=[1])
    plain = SlidingWindowSegCAM(
        model.networks[0], roi_size=model.patch_size, layers="decoder.stages.1", relu=False,
        window_grid=nnunet_window_grid(model.patch_size),
    )(case.data[None], classes=[1], pred=logits.argmax(0)[None, None])  # fmt: skip
    torch.testing.assert_close(ours["pre_head"], plain["decoder.stages.1"], rtol=0, atol=0)
    assert ours.region.sum() > 0
    _, expected = reference_map(model, case, "decoder.stages.1", ours.region[0, 0])
    assert relative_error(ours["pre_head"][0, 0], expected[0]) < 1e-4


def test_mirroring_and_folds_change_the_map(nnunet_folder, files):
    """The deployed model's CAM is not one fold's: each term contributes (a test that the terms are all used)."""
    both = NNUNetModel(nnunet_folder, folds=[0, 1])
    case = both.preprocess(files)
    logits = both.predict(case.data)
    deployed = NNUNetSegCAM(both, relu=False).explain_on_grid(case, logits, classes=[1])["pre_head"]
    one = NNUNetModel(nnunet_folder, folds=[0], use_mirroring=False)
    single = NNUNetSegCAM(one, relu=False).explain_on_grid(case, logits, classes=[1])["pre_head"]
    assert relative_error(single, deployed) > 1e-2
