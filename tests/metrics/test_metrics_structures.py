# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""share and density per structure against their definitions, voxel by voxel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_segcam.metrics import structure_masks, structure_scores


def test_share_and_density_by_their_definitions():
    g = torch.Generator().manual_seed(0)
    cam = torch.randn(2, 5, 4, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (5, 4, 3), generator=g)
    labels[labels == 2] = 3  # label 2 absent
    ids, masks = structure_masks(labels)
    assert ids == [0, 1, 3]
    share, density = structure_scores(cam, masks)
    for n in range(2):
        values = cam[n].numpy().ravel()
        positive = np.maximum(values, 0).sum()
        for j, s in enumerate(ids):
            inside = labels.numpy().ravel() == s
            assert share[n, j] == pytest.approx(np.maximum(values[inside], 0).sum() / positive, rel=1e-12)
            assert density[n, j] == pytest.approx(values[inside].mean(), rel=1e-12)
    torch.testing.assert_close(share.sum(1), torch.ones(2, dtype=torch.float64))  # every label: shares add up to 1
    # a one-hot (S, *spatial) float mask gives the same table as the label map
    one_hot = torch.stack([(labels == s).double() for s in ids])
    torch.testing.assert_close(structure_scores(cam.float(), one_hot), (share, density), rtol=1e-6, atol=1e-7)


def test_empty_structure_and_map_without_positive_relevance():
    labels = torch.zeros(3, 3, 3)
    ids, masks = structure_masks(labels, structures=[0, 7])
    assert ids == [0, 7] and not masks[1].any()
    with pytest.warns(UserWarning, match="empty structure"):
        share, density = structure_scores(torch.ones(1, 3, 3, 3), masks)
    assert share.tolist() == [[1.0, 0.0]] and density.tolist() == [[1.0, 0.0]]
    with pytest.warns(UserWarning, match="without positive relevance"):
        share, density = structure_scores(-torch.ones(1, 3, 3, 3), masks[:1])
    assert share.tolist() == [[0.0]] and density.tolist() == [[-1.0]]


def test_structures_on_another_grid_are_refused():
    with pytest.raises(ValueError, match="spatial shape"):
        structure_scores(torch.ones(1, 3, 3, 3), torch.ones(1, 3, 3, 4, dtype=torch.bool))
