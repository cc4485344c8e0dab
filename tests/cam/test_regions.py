# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Region kinds -> region weights and cotangents."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNet

from monai_segcam import Box, Component, SegCAM, Voxel
from monai_segcam.cam.regions import class_masks, region_weights


def test_class_masks_equal_argmax_with_ties():
    logits = torch.randint(0, 3, (2, 4, 5, 6, 7)).float()  # many ties
    masks = class_masks(logits, [0, 1, 2, 3])
    expected = torch.stack([logits.argmax(1) == c for c in range(4)], 1)
    assert torch.equal(masks, expected)
    labels = logits.argmax(1, keepdim=True)
    assert torch.equal(class_masks(labels, [2, 3]), expected[:, 2:])  # discrete label map
    assert torch.equal(class_masks(labels.float(), [2, 3]), expected[:, 2:])  # AsDiscrete(argmax=True) output
    assert torch.equal(class_masks(logits - 1.5, [1], multi_label=True), logits[:, 1:2] > 1.5)


def test_region_kinds():
    logits = torch.zeros(1, 2, 8, 8, 8)
    logits[:, 1, 1:3, 1:3, 1:3] = 1  # component of 8 voxels
    logits[:, 1, 5:8, 5:8, 5:8] = 1  # component of 27 voxels
    label = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    label[:, :, 0:3, 0:3, 0:3] = 1
    shape = (8, 8, 8)
    pred = class_masks(logits, [1])
    w = lambda region, **kw: region_weights(region, logits, [1], shape, 1, warn_empty=False, **kw)  # noqa: E731
    assert torch.equal(w("pred").bool(), pred)
    assert w("all").sum() == 512 and w("empty").sum() == 0
    assert torch.equal(w("label", label=label).bool(), label == 1)
    assert torch.equal(w("fp", label=label).bool(), pred & (label != 1))
    assert torch.equal(w("fn", label=label).bool(), (label == 1) & ~pred)
    assert w("component").sum() == 27 and w("component")[0, 0, 6, 6, 6] == 1
    assert w(Component(index=1)).sum() == 8 and w(Component(index=1))[0, 0, 1, 1, 1] == 1
    assert w(Component(index=2)).sum() == 0
    v = w(Voxel((1, 2, 3)))
    assert v.sum() == 1 and v[0, 0, 1, 2, 3] == 1
    assert w(Box((0, 0, 0), (2, 3, 4))).sum() == 24
    assert w(Box((0, 0, 0), (2, 2, 2), within_prediction=True)).sum() == 1
    with pytest.raises(ValueError, match="label="):
        w("fp")
    with pytest.raises(ValueError, match="outside"):
        w(Voxel((9, 0, 0)))
    with pytest.raises(ValueError, match="does not match"):
        w(torch.ones(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="pred"):
        w("prd")


def test_mask_channels_per_class_or_per_output():
    logits = torch.zeros(1, 3, 4, 4, 4)
    per_output = torch.stack([torch.full((4, 4, 4), float(c)) for c in range(3)])[None]
    got = region_weights(per_output, logits, [2, 1], (4, 4, 4), 1, warn_empty=False)
    assert got[0, 0].unique().tolist() == [2.0] and got[0, 1].unique().tolist() == [1.0]
    per_class = per_output[:, :2]
    got = region_weights(per_class, logits, [2, 1], (4, 4, 4), 1, warn_empty=False)
    assert got[0, 0].unique().tolist() == [0.0] and got[0, 1].unique().tolist() == [1.0]


def test_pred_argument_defines_the_region():
    net = UNet(3, 1, 3, (8, 16, 32), (2, 2), num_res_units=1).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    pred = torch.zeros(1, 1, 16, 16, 16, dtype=torch.long)
    pred[..., 4:8, 4:8, 4:8] = 2
    cam = SegCAM(net, layers="pre_head", method="hirescam", relu=False)
    box = torch.zeros(1, 1, 16, 16, 16)
    box[..., 4:8, 4:8, 4:8] = 1
    torch.testing.assert_close(cam(x, classes=2, pred=pred), cam(x, classes=2, region=box))
    torch.testing.assert_close(cam(x, classes=2, region=Voxel((5, 5, 5))), cam(x, classes=2, region=Box((5, 5, 5), (6, 6, 6))))


def test_region_strings():
    from monai_segcam.cam.regions import as_region, parse_region

    assert parse_region("box:4,5,3:10,12,8") == ("box", [(4, 5, 3), (10, 12, 8)])
    assert parse_region("component") == ("component", []) and parse_region("fn") == ("fn", [])
    assert as_region("component:2") == Component(index=2) and as_region("voxel:1,2,3") == Voxel((1, 2, 3))
    assert as_region("box:10,5,3:4,12,8") == Box((4, 5, 3), (11, 13, 9))  # any two corners, both included
    logits = torch.zeros(1, 2, 12, 14, 10)
    weights = region_weights("box:10,5,3:4,12,8", logits, [1], logits.shape[2:], 1)
    assert weights.sum() == 7 * 8 * 6 and weights[0, 0, 4, 5, 3] == 1 and weights[0, 0, 10, 12, 8] == 1
    for bad, message in [("box:1,2,3", "unknown region"), ("voxel:1,a,3", "not a comma-separated"),
                         ("box:1,2:3,4,5", "same number of indices"), ("component:x", "unknown region")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            as_region(bad)


def test_region_source_reads_label_maps_and_logits():
    from monai.data import MetaTensor

    from monai_segcam.cam.regions import region_source

    label_map = MetaTensor(torch.tensor([[[0.0, 2.0, 1.0]]]))  # AsDiscreted(argmax=True): float, metadata
    source = region_source(label_map)
    assert type(source) is torch.Tensor and source.dtype == torch.long and source.tolist() == [[[0, 2, 1]]]
    assert torch.equal(class_masks(source, [2]), class_masks(label_map.as_tensor(), [2]))
    logit = torch.tensor([[[-1.0, 0.5, 2.0]]])
    assert torch.equal(region_source(logit, multi_label=True), logit)  # one sigmoid channel: logits, kept
    logits = torch.randn(1, 3, 4)
    assert torch.equal(region_source(logits), logits) and region_source(None) is None
