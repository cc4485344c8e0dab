# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest
import torch

from monai_segcam.metrics import pointing_game, relevance_mass, topk_iou


def _blob_mask(b: int = 2, n: int = 1, size: int = 12) -> torch.Tensor:
    mask = torch.zeros(b, n, size, size, size, dtype=torch.bool)
    mask[..., 3:7, 2:8, 4:9] = True
    return mask


def test_map_equal_to_mask_is_perfect():
    mask = _blob_mask()
    cam = mask.float()
    torch.testing.assert_close(relevance_mass(cam, mask), torch.ones(2, 1))
    torch.testing.assert_close(topk_iou(cam, mask, k="mask"), torch.ones(2, 1))
    torch.testing.assert_close(pointing_game(cam, mask), torch.ones(2, 1))


def test_disjoint_map_scores_zero():
    mask = _blob_mask()
    cam = (~mask).float() * torch.rand(mask.shape)
    torch.testing.assert_close(relevance_mass(cam, mask), torch.zeros(2, 1))
    torch.testing.assert_close(topk_iou(cam, mask, k="mask"), torch.zeros(2, 1))
    torch.testing.assert_close(pointing_game(cam, mask), torch.zeros(2, 1))


def test_relevance_mass_known_fraction_and_negative_part_ignored():
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask[..., 0, 0, 0] = True
    cam = torch.zeros(1, 1, 4, 4, 4)
    cam[..., 0, 0, 0] = 3.0  # inside
    cam[..., 1, 1, 1] = 1.0  # outside
    cam[..., 2, 2, 2] = -100.0  # negative evidence does not count
    torch.testing.assert_close(relevance_mass(cam, mask), torch.tensor([[0.75]]))
    # float masks are binarised at 0.5
    torch.testing.assert_close(relevance_mass(cam, mask.float() * 0.9), torch.tensor([[0.75]]))


def test_zero_map_warns_and_returns_zero():
    mask = _blob_mask()
    cam = torch.zeros(mask.shape)
    cam[1] = mask[1].float()
    with pytest.warns(UserWarning, match="without positive energy"):
        out = relevance_mass(cam, mask)
    torch.testing.assert_close(out, torch.tensor([[0.0], [1.0]]))
    assert not out.isnan().any()
    with pytest.warns(UserWarning, match="without positive energy"):
        assert relevance_mass(-torch.ones(mask.shape), mask).eq(0).all()
    with pytest.warns(UserWarning, match="constant"):
        assert pointing_game(torch.zeros(mask.shape), mask).eq(0).all()


def test_channel_broadcast_and_shape():
    mask = torch.zeros(1, 3, 6, 6, 6, dtype=torch.bool)
    mask[:, 0, :3] = True
    mask[:, 1, 3:] = True
    mask[:, 2, :, :3] = True
    cam = torch.zeros(1, 1, 6, 6, 6)
    cam[..., :3, :, :] = 1.0  # the cam equals channel 0's mask; channel 2 holds half of it
    out = relevance_mass(cam, mask)
    assert out.shape == (1, 3)
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0, 0.5]]))
    torch.testing.assert_close(topk_iou(cam, mask, k="mask"), torch.tensor([[1.0, 0.0, 1 / 3]]))


def test_pointing_game_tolerance():
    cam = torch.zeros(1, 1, 9, 9, 9)
    cam[0, 0, 2, 2, 2] = 1.0
    mask = torch.zeros(1, 1, 9, 9, 9, dtype=torch.bool)
    mask[0, 0, 4, 4, 5] = True  # Chebyshev distance 3 from the peak
    expected = {0: 0.0, 1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0}
    for tol, hit in expected.items():
        assert pointing_game(cam, mask, tolerance=tol).item() == hit
    with pytest.raises(ValueError):
        pointing_game(cam, mask, tolerance=-1)


def test_pointing_game_ties_any_peak_and_2d():
    cam = torch.zeros(2, 1, 8, 8)
    cam[:, :, 0, 0] = 5.0
    cam[:, :, 7, 7] = 5.0
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 7, 7] = True  # the second of two peak voxels
    mask[1, 0, 4, 4] = True
    torch.testing.assert_close(pointing_game(cam, mask), torch.tensor([[1.0], [0.0]]))


def test_topk_iou_fraction():
    # a 1D-flattened cam with a strict order: the top 10 voxels are known
    cam = torch.arange(1000.0).reshape(1, 1, 10, 10, 10)
    mask = torch.zeros(1, 1, 10, 10, 10, dtype=torch.bool)
    mask.view(-1)[-20:] = True  # the 20 highest voxels
    torch.testing.assert_close(topk_iou(cam, mask, k=0.01), torch.tensor([[10 / 20]]))  # top 10 within mask
    torch.testing.assert_close(topk_iou(cam, mask, k=0.02), torch.tensor([[1.0]]))
    torch.testing.assert_close(topk_iou(cam, mask, k=0.04), torch.tensor([[20 / 40]]))
    with pytest.raises(ValueError):
        topk_iou(cam, mask, k=1.5)
    with pytest.raises(ValueError):
        topk_iou(cam, mask, k="all")


def test_topk_iou_empty_mask_warns():
    cam = torch.rand(1, 1, 5, 5, 5)
    mask = torch.zeros(1, 1, 5, 5, 5, dtype=torch.bool)
    with pytest.warns(UserWarning, match="empty mask"):
        assert topk_iou(cam, mask, k="mask").item() == 0.0


def test_bad_shapes():
    with pytest.raises(ValueError, match="batch and spatial"):
        relevance_mass(torch.rand(1, 1, 4, 4, 4), torch.rand(1, 1, 4, 4, 5))
    with pytest.raises(ValueError, match="channels"):
        relevance_mass(torch.rand(1, 2, 4, 4, 4), torch.rand(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match="number of dims"):
        topk_iou(torch.rand(1, 1, 4, 4, 4), torch.rand(1, 4, 4, 4))
