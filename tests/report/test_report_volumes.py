# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The report grid, resampling, quantisation and NIfTI encoding of ``monai_segcam.report.volumes``, checked against
world coordinates (affines) and closed forms."""

from __future__ import annotations

import gzip
import itertools
import struct

import nibabel as nib
import numpy as np
import pytest

from monai_segcam.report.volumes import (
    Grid,
    bitmask,
    class_masks,
    encode_nifti_gz,
    label_channels,
    quantize,
    report_grid,
    resample,
)

# array axes (i, j, k) -> world (-1.5 j, -1.2 i, 2.0 k): permuted and flipped
PERMUTED = np.array([[0.0, -1.5, 0.0, 10.0], [-1.2, 0.0, 0.0, 5.0], [0.0, 0.0, 2.0, -7.0], [0.0, 0.0, 0.0, 1.0]])


def world(grid: Grid, index) -> np.ndarray:
    return (grid.affine @ np.array([*index, 1.0]))[:3]


def test_report_grid_is_ras_ordered_and_keeps_voxel_centres():
    source = Grid((12, 10, 8), PERMUTED)
    grid = report_grid(source, 96)
    assert grid.shape == (10, 12, 8)  # world x comes from array axis j, y from i
    columns = grid.affine[:3, :3]
    assert np.allclose(columns, np.diag(np.diag(columns))) and (np.diag(columns) > 0).all()  # R, A, S, in order
    assert np.allclose(grid.spacing, (1.5, 1.2, 2.0))
    centres = {tuple(np.round(world(source, v), 6)) for v in itertools.product(*map(range, source.shape))}
    assert {tuple(np.round(world(grid, v), 6)) for v in itertools.product(*map(range, grid.shape))} == centres


def test_report_grid_downsamples_by_one_factor_and_covers_the_same_extent():
    source = Grid((200, 40, 30), np.diag([0.5, 1.0, 2.0, 1.0]))
    grid = report_grid(source, 96)
    assert max(grid.shape) == 96 and grid.shape == (96, 19, 14)
    for axis in range(3):  # the outer voxel faces coincide
        fine = source.spacing[axis] * source.shape[axis]
        assert np.isclose(grid.spacing[axis] * grid.shape[axis], fine)
        assert np.isclose(world(grid, (0, 0, 0))[axis] - grid.spacing[axis] / 2, -source.spacing[axis] / 2)


def test_resample_permutation_is_exact_and_a_linear_field_survives_downsampling():
    rng = np.random.default_rng(0)
    source = Grid((12, 10, 8), PERMUTED)
    values = rng.normal(size=(1, *source.shape)).astype(np.float32)
    grid = report_grid(source, 96)
    out = resample(values, source, grid)
    for v in itertools.product(*map(range, grid.shape)):
        original = np.rint(np.linalg.inv(source.affine) @ grid.affine @ np.array([*v, 1.0]))[:3].astype(int)
        assert out[(0, *v)] == pytest.approx(values[(0, *original)], abs=1e-5)
    labels = rng.integers(0, 4, size=(1, *source.shape)).astype(np.float32)
    assert set(np.unique(resample(labels, source, grid, nearest=True))) <= {0, 1, 2, 3}
    # world x as a field: block averaging and trilinear interpolation of a linear function are exact inside
    big = Grid((200, 40, 30), np.array([[0.5, 0, 0, 3.0], [0, 1.0, 0, -2.0], [0, 0, 2.0, 1.0], [0, 0, 0, 1]]))
    index = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in big.shape], indexing="ij")
    field = (big.affine[0, 0] * index[0] + big.affine[0, 3]).astype(np.float32)[None]
    coarse = report_grid(big, 96)
    out = resample(field, big, coarse)[0]
    expected = coarse.affine[0, 0] * np.arange(coarse.shape[0]) + coarse.affine[0, 3]
    np.testing.assert_allclose(out[1:-1, 3, 3], expected[1:-1], atol=1e-3)


def test_quantize_error_and_ranges():
    rng = np.random.default_rng(1)
    cam = np.abs(rng.normal(size=(9, 8, 7))) * 40
    codes, slope, inter = quantize(cam, "cam")
    assert codes.dtype == np.uint8 and inter == 0.0 and codes.max() == 255
    assert np.abs(codes * slope + inter - cam).max() <= slope / 2 + 1e-9
    signed = cam - 10  # without ReLU: the range starts at the minimum
    codes, slope, inter = quantize(signed, "cam")
    assert inter == pytest.approx(signed.min()) and np.abs(codes * slope + inter - signed).max() <= slope / 2 + 1e-9
    image = rng.normal(size=(20, 20, 20))
    codes, slope, inter = quantize(image, "image")
    low, high = np.percentile(image, (0.5, 99.5))
    assert inter == pytest.approx(low) and inter + 255 * slope == pytest.approx(high)
    inside = (image >= low) & (image <= high)
    assert np.abs(codes * slope + inter - image)[inside].max() <= slope / 2 + 1e-9
    zero, slope, _ = quantize(np.zeros((3, 3, 3)), "cam")  # an empty map: zeros, no NaN
    assert not zero.any() and np.isfinite(slope)
    with pytest.raises(ValueError, match="0-255"):
        quantize(np.full((2, 2, 2), 300.0), "labels")


def test_encoded_nifti_round_trip_through_nibabel():
    grid = report_grid(Grid((12, 10, 8), PERMUTED), 96)
    cam = np.abs(np.random.default_rng(2).normal(size=grid.shape)) * 3
    codes, slope, inter = quantize(cam, "cam")
    data = encode_nifti_gz(codes, grid, slope, inter)
    assert data == encode_nifti_gz(codes, grid, slope, inter)  # deterministic (no time stamp)
    raw = gzip.decompress(data)  # the fields the browser viewer reads: little endian, uint8 (2), dims, vox_offset
    assert struct.unpack("<i", raw[:4]) == (348,) and struct.unpack("<h", raw[70:72]) == (2,)
    assert struct.unpack("<4h", raw[40:48]) == (3, *grid.shape) and struct.unpack("<f", raw[108:112]) == (352.0,)
    image = nib.Nifti1Image.from_bytes(raw)
    np.testing.assert_allclose(image.affine, grid.affine, atol=1e-5)
    np.testing.assert_allclose(image.get_fdata(), cam, atol=slope / 2 + 1e-6)  # scl_slope / scl_inter applied


def test_label_channels_and_bitmask():
    onehot = np.zeros((3, 4, 4, 4))
    onehot[0] = 1
    onehot[0, :2], onehot[2, :2] = 0, 1
    assert (label_channels(onehot, multi_label=False)[:2] == 2).all() and not label_channels(onehot, False)[2:].any()
    channels = np.zeros((3, 4, 4, 4))
    channels[0, 0], channels[2, 0], channels[1, 1] = 1, 1, 1  # overlapping masks
    packed = label_channels(channels, multi_label=True)
    assert packed[0, 0, 0] == 0b101 and packed[1, 0, 0] == 0b010 and packed[2, 0, 0] == 0
    masks = class_masks(packed, [0, 1, 2], multi_label=True)
    np.testing.assert_array_equal(masks, channels > 0.5)
    with pytest.raises(ValueError, match="at most 8"):
        bitmask(np.zeros((9, 2, 2, 2)))
