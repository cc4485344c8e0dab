# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""ChannelAttribution: gradients against autograd through MONAI's stitched sliding window, drops against brute force,
integrated gradients' completeness on a linear network, channel ranking on planted evidence, the CSV table."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from torch import nn

from monai_segcam.cam.regions import region_weights
from monai_segcam.data.planted import make_two_objects_case
from monai_segcam.outputs import write_channel_table
from monai_segcam.perturbation import (
    CHANNEL_COLUMNS,
    ChannelAttribution,
    channel_names,
    make_baseline,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def two_channel_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 2, 3, (4, 8), (2,), num_res_units=0).double().eval()


def stitched_score(net, roi, mode, padding_mode, target, classes, weights):
    def score(image):
        y = sliding_window_inference(image, -1 if roi is None else roi, 1, net, 0.5, mode, padding_mode=padding_mode)
        if target == "probabilities":
            y = torch.softmax(y, 1)
        return (weights * y[:, list(classes)]).flatten(2).sum(-1)

    return score


CASES = {
    "whole volume, logits": (None, "constant", "logits", "constant"),
    "windows gaussian, logits": ((12, 10, 16), "gaussian", "logits", "constant"),
    "windows constant, probabilities": ((12, 10, 16), "constant", "probabilities", "constant"),
    "padded gaussian, probabilities": ((24, 12, 20), "gaussian", "probabilities", "constant"),
    "padded reflect, logits": ((24, 12, 20), "constant", "logits", "reflect"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_and_drops_equal_autograd_and_brute_force(case):
    """The gradient of the stitched region score equals autograd through MONAI's sliding_window_inference (windows,
    blending and padding differentiated by autograd); the channel drops equal MONAI's score of each image with one
    channel replaced."""
    roi, mode, target, padding_mode = CASES[case]
    net = two_channel_unet()
    x = torch.randn(1, 2, 20, 18, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    classes = [1, 2]
    attribution = ChannelAttribution(
        net, roi_size=roi, mode=mode, target=target, padding_mode=padding_mode, overlap=0.5, steps=2,
        baseline="mean", sw_batch_size=2, batch_size=3,
    )  # fmt: skip
    result = attribution(x, classes=classes)
    with torch.no_grad():
        clean = sliding_window_inference(x, -1 if roi is None else roi, 1, net, 0.5, mode, padding_mode=padding_mode)
    weights = region_weights("pred", clean, classes, x.shape[2:], 1)
    score = stitched_score(net, roi, mode, padding_mode, target, classes, weights)
    leaf = x.clone().requires_grad_(True)
    s = score(leaf)[0]
    grads = torch.stack([torch.autograd.grad(s[i], leaf, retain_graph=True)[0][0] for i in range(2)])[None]
    expected = x[:, None] * grads
    scale = float(expected.abs().max())
    torch.testing.assert_close(result.maps["input_x_gradient"], expected, rtol=0, atol=1e-10 * scale)
    torch.testing.assert_close(result.score[0], s.detach(), rtol=1e-12, atol=0)
    base = make_baseline(x, "mean")
    with torch.no_grad():
        for j in range(2):
            replaced = x.clone()
            replaced[:, j] = base[:, j]
            expected_drop = s.detach() - score(replaced)[0]
            torch.testing.assert_close(result.scores["drop"][0, :, j], expected_drop, rtol=1e-10, atol=0)


class Linear(nn.Module):
    """A 1x1x1 convolution: logits = w[k, 0] * x0 + w[k, 1] * x1 + b[k]; ``dead_channel`` gets no weight."""

    def __init__(self, dead_channel: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(2, 3, 1).double()
        if dead_channel is not None:
            with torch.no_grad():
                self.conv.weight[:, dead_channel] = 0.0

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("roi", [None, (12, 12, 12)])
def test_linear_network_closed_forms(roi):
    """For logits = W x + b, every measure has a closed form: the gradient of class c's region score is W[c] on the
    region, so input x gradient = x_j W[c, j] on the region, integrated gradients = (x_j - x0_j) W[c, j] on the region
    (any number of steps), the drop of channel j = sum over the region of W[c, j] (x_j - x0_j), and the integrated
    gradients sum to S(x) - S(x0) (completeness)."""
    net = Linear().eval()
    x = torch.randn(1, 2, 16, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 1, 16, 16, 16, dtype=torch.bool)
    mask[..., 2:11, 4:14, 5:9] = True
    attribution = ChannelAttribution(net, roi_size=roi, baseline="blur", blur_sigma=2.0, steps=3, mode="gaussian")
    result = attribution(x, classes=[0, 2], region=mask)
    base = make_baseline(x, "blur", 2.0)
    w = net.conv.weight[:, :, 0, 0, 0].detach()  # (3, 2)
    region = mask[0, 0].double()
    for i, c in enumerate((0, 2)):
        for j in range(2):
            expected_ig = (x - base)[0, j] * w[c, j] * region
            expected_ixg = x[0, j] * w[c, j] * region
            maps = result.maps
            torch.testing.assert_close(maps["integrated_gradients"][0, i, j], expected_ig, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(maps["input_x_gradient"][0, i, j], expected_ixg, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(result.scores["drop"][0, i, j], expected_ig.sum(), rtol=1e-9, atol=1e-9)
        with torch.no_grad():
            completeness = (region * (net(x) - net(base))[0, c]).sum()
        total = result.scores["integrated_gradients"][0, i].sum()
        torch.testing.assert_close(total, completeness, rtol=1e-9, atol=1e-9)


def test_dead_channel_scores_exactly_zero_and_ranks_last():
    """A two-channel planted case (the objects in channel 0, another case's objects in channel 1) through a 1x1
    convolution that reads only channel 0: channel 0 first under every measure, channel 1 exactly zero."""
    images = [make_two_objects_case((32, 32, 32), seed=s)["image"] for s in (0, 1)]
    x = torch.from_numpy(np.concatenate(images))[None].double()
    net = Linear(dead_channel=1).eval()
    with torch.no_grad():
        net.conv.weight[1, 0] = 4.0  # class 1 rises with channel 0's brightness
        net.conv.bias[1] = -2.0
    result = ChannelAttribution(net, roi_size=(16, 16, 16), steps=4)(x, classes=1)
    for method in ("drop", "input_x_gradient", "integrated_gradients"):
        assert result.ranking(method)[0, 0].tolist() == [0, 1]
        assert result.scores[method][0, 0, 1] == 0
        assert result.scores[method][0, 0, 0] > 0


def test_trained_network_ranks_the_evidence_channel_first():
    """A small convolutional network trained (a few seconds) to segment the objects of channel 0 while channel 1 holds
    another case's objects: every measure ranks channel 0 first on held-out cases."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 2, 3, padding=1))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)

    def batch(seeds):
        cases = [(make_two_objects_case((32, 32, 32), seed=s), make_two_objects_case((32, 32, 32), seed=s + 500))
                 for s in seeds]  # fmt: skip
        x = torch.stack([torch.from_numpy(np.concatenate([a["image"], b["image"]])) for a, b in cases])
        y = torch.stack([torch.from_numpy(a["label"][0]) for a, _ in cases])
        return x, y

    x_train, y_train = batch(range(6))
    for _ in range(40):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x_train), y_train).backward()
        optimizer.step()
    x_test, y_test = batch(range(100, 103))
    with torch.no_grad():
        pred = net(x_test).argmax(1)
    dice = 2 * ((pred == 1) & (y_test == 1)).sum() / ((pred == 1).sum() + (y_test == 1).sum())
    assert dice > 0.8
    result = ChannelAttribution(net.eval(), roi_size=(16, 16, 16), steps=8)(x_test, classes=1)
    for method in ("drop", "input_x_gradient", "integrated_gradients"):
        assert (result.ranking(method)[:, 0, 0] == 0).all(), (method, result.scores[method])


def test_rows_table_and_names(tmp_path):
    net = Linear().eval()
    x = torch.randn(2, 2, 8, 8, 8, dtype=torch.float64)
    result = ChannelAttribution(net, methods=["drop", "integrated_gradients"], steps=2)(x, classes=[1, 2], region="all")
    rows = result.rows(["a", "b"], ["T1", "FLAIR"])
    assert len(rows) == 2 * 2 * 2 and set(rows[0]) == set(CHANNEL_COLUMNS)
    assert rows[1]["channel_name"] == "FLAIR" and rows[1]["input_x_gradient"] == ""
    path = write_channel_table(rows, tmp_path / "out" / "channels.csv")
    with open(path, newline="") as stream:
        read = list(csv.DictReader(stream))
    assert tuple(read[0]) == CHANNEL_COLUMNS and len(read) == 8
    assert float(read[5]["drop"]) == pytest.approx(rows[5]["drop"], rel=1e-12)
    assert sorted(os.listdir(tmp_path / "out")) == ["channels.csv"]  # atomic: no temporary file left
    assert result.ranking("drop").shape == (2, 2, 2)
    with pytest.raises(KeyError, match="input_x_gradient"):
        result.ranking("input_x_gradient")


def test_channel_names_sources(tmp_path):
    assert channel_names(["T1", "T2"], 2) == ["T1", "T2"]
    assert channel_names(None, 2) == ["channel0", "channel1"]
    assert channel_names({"1": "FLAIR"}, 2) == ["channel0", "FLAIR"]
    metadata = {"network_data_format": {"inputs": {"image": {"channel_def": {"0": "T1c", "1": "T2"}}}}}
    assert channel_names(metadata, 2) == ["T1c", "T2"]
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(metadata))
    assert channel_names(tmp_path, 2) == ["T1c", "T2"]
    assert channel_names(os.path.join(REPO, "bundles", "segcam_demo"), 1) == ["image"]
    with pytest.raises(ValueError, match="2 channel names"):
        channel_names(["T1", "T2"], 3)


def test_errors_and_state():
    net = two_channel_unet().train()
    with pytest.raises(ValueError, match="integrated_gradients"):
        ChannelAttribution(net, methods=["integrated_gradient"])
    with pytest.raises(ValueError, match="steps"):
        ChannelAttribution(net, steps=0)
    with pytest.raises(ValueError, match="blur"):
        ChannelAttribution(net, baseline="blurred")
    x = torch.randn(1, 2, 8, 8, 8, dtype=torch.float64)
    with torch.inference_mode():
        result = ChannelAttribution(net, steps=2)(x, classes=1, region="all")
    assert result.maps["integrated_gradients"].shape == (1, 1, 2, 8, 8, 8)
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert all(p.grad is None for p in net.parameters())
