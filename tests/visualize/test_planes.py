# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_segcam.visualize.planes import (
    as_volume,
    cam_range,
    extract_plane,
    find_center,
    intensity_window,
    plane_aspect,
    volume_spacing,
)

from .conftest import PEAK, SHAPE


def test_as_volume_drops_singleton_leading_dims_and_checks_rank():
    assert as_volume(torch.rand(1, *SHAPE, requires_grad=True)).shape == SHAPE
    assert as_volume(torch.rand(1, 1, *SHAPE, dtype=torch.bfloat16)).dtype == np.float32
    assert as_volume(MetaTensor(torch.rand(1, *SHAPE))).shape == SHAPE
    with pytest.raises(ValueError, match="single channel"):
        as_volume(np.zeros((2, *SHAPE)), "cam")
    with pytest.raises(ValueError, match="cam"):
        as_volume(np.zeros((4, 4)), "cam")


def test_find_center(volumes):
    _, cam, region = volumes
    assert find_center(cam) == PEAK
    assert find_center(cam, region, "centroid") == (6, 8, 8)
    assert find_center(cam, region, (1, 2, 3)) == (1, 2, 3)
    zero = np.zeros(SHAPE)
    assert find_center(zero, region) == (6, 8, 8)  # constant CAM: region centroid
    assert find_center(zero) == (10, 8, 6)  # ... else the volume centre
    assert find_center(cam, np.zeros(SHAPE), "centroid") == (10, 8, 6)
    nan_cam = cam.copy()
    nan_cam[0, 0, 0] = np.nan
    assert find_center(nan_cam) == PEAK
    with pytest.raises(ValueError, match="region"):
        find_center(cam, None, "centroid")
    with pytest.raises(ValueError, match="inside"):
        find_center(cam, None, (20, 0, 0))
    with pytest.raises(ValueError):
        find_center(cam, None, "middle")


def test_extract_plane_orientation():
    """RAS (X, Y, Z): anterior / superior up, patient right on the left (radiological)."""
    vol = np.zeros((4, 5, 6))
    vol[3, 4, 5] = 1.0  # right, anterior, superior corner
    axial = extract_plane(vol, "axial", 5)
    assert axial.shape == (5, 4) and axial[0, 0] == 1.0  # anterior top, right left
    assert extract_plane(vol, "axial", 5, radiological=False)[0, -1] == 1.0
    coronal = extract_plane(vol, "coronal", 4)
    assert coronal.shape == (6, 4) and coronal[0, 0] == 1.0  # superior top, right left
    sagittal = extract_plane(vol, "sagittal", 3)
    assert sagittal.shape == (6, 5) and sagittal[0, 0] == 1.0  # superior top, anterior left
    with pytest.raises(ValueError, match="outside"):
        extract_plane(vol, "sagittal", 4)


def test_spacing_aspect_and_ranges():
    meta = MetaTensor(torch.zeros(1, *SHAPE), affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])))
    spacing = volume_spacing(None, np.zeros(SHAPE), meta)
    assert spacing == (0.5, 0.5, 2.0)
    assert plane_aspect("axial", spacing) == 1.0 and plane_aspect("coronal", spacing) == 4.0
    assert volume_spacing(None, np.zeros(SHAPE)) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="spacing"):
        volume_spacing((1.0, 0.0, 1.0))
    assert intensity_window(np.ones(SHAPE)) == (1.0, 2.0)
    assert cam_range([np.zeros(SHAPE)]) == (0.0, 1.0)
    assert cam_range([np.zeros(SHAPE)], vmin=0.0) == (0.0, 1.0)
    assert cam_range([np.full(SHAPE, 2.0), np.full(SHAPE, -1.0)]) == (-1.0, 2.0)
    with pytest.raises(ValueError, match="vmin"):
        cam_range([np.zeros(SHAPE)], vmin=1.0, vmax=1.0)
