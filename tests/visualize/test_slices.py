# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_segcam.visualize import figure_to_array, plot_orthogonal_slices

from .conftest import PEAK, SHAPE


def _titles(fig):
    return {ax.get_label(): ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"}


def assert_same_planes(figure, reference):
    for ax, expected in zip(figure.axes, reference.axes):
        assert len(ax.images) == len(expected.images) == 2 and ax.get_aspect() == expected.get_aspect()
        for drawn, wanted in zip(ax.images, expected.images):
            np.testing.assert_array_equal(np.ma.getdata(drawn.get_array()), np.ma.getdata(wanted.get_array()))
            assert drawn.get_clim() == wanted.get_clim()
        assert [c.get_paths()[0].vertices.tolist() for c in ax.collections] == [
            c.get_paths()[0].vertices.tolist() for c in expected.collections
        ]  # the region's contour


@pytest.mark.parametrize("to_tensor", [False, True])
def test_peak_centred_slices_contain_planted_maximum(volumes, to_tensor):
    image, cam, region = volumes
    peak_value = float(cam.max())
    if to_tensor:
        image, cam, region = torch.from_numpy(image)[None], torch.from_numpy(cam)[None], torch.from_numpy(region)
    fig = plot_orthogonal_slices(image, cam, region=region, title="t")
    i, j, k = PEAK
    assert _titles(fig) == {"axial": f"axial z={k}", "coronal": f"coronal y={j}", "sagittal": f"sagittal x={i}"}
    assert len(fig.axes) == 4  # three planes and the colour bar
    # the maximum of every drawn CAM plane is the planted maximum
    for ax in fig.axes[:3]:
        assert ax.images[1].get_array().max() == pytest.approx(peak_value)


def test_centroid_center_and_explicit_voxel(volumes):
    image, cam, region = volumes
    assert _titles(plot_orthogonal_slices(image, cam, region, center="centroid"))["axial"] == "axial z=8"
    titles = _titles(plot_orthogonal_slices(image, cam, center=(1, 2, 3), colorbar=False))
    assert titles == {"axial": "axial z=3", "coronal": "coronal y=2", "sagittal": "sagittal x=1"}


def test_metatensor_spacing_sets_aspect(volumes):
    image, cam, _ = volumes
    meta = MetaTensor(torch.from_numpy(image)[None], affine=torch.diag(torch.tensor([1.0, 1.0, 3.0, 1.0])))
    fig = plot_orthogonal_slices(meta, cam)
    aspects = {ax.get_label(): ax.get_aspect() for ax in fig.axes[:3]}
    assert aspects == {"axial": 1.0, "coronal": 3.0, "sagittal": 3.0}
    assert plot_orthogonal_slices(meta, cam, spacing=(1, 1, 1)).axes[1].get_aspect() == 1.0


def test_zero_cam_plots_without_warnings(volumes):
    image, cam, region = volumes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_orthogonal_slices(image, np.zeros_like(cam), region=region)
        figure_to_array(fig)  # full render
    assert _titles(fig)["axial"] == "axial z=8"  # constant CAM: centred on the region
    for ax in fig.axes[:3]:  # an all-zero map is never drawn: each plane says so
        assert [t.get_text() for t in ax.texts] == ["zero map"]
        assert np.isnan(ax.images[1].get_array().filled(np.nan)).all()
    assert not any(ax.texts for ax in plot_orthogonal_slices(image, cam, region=region).axes)  # a real map is drawn


def test_bad_inputs(volumes):
    image, cam, region = volumes
    with pytest.raises(ValueError, match="spatial shape"):
        plot_orthogonal_slices(image, cam[:-1])
    with pytest.raises(ValueError, match="region"):
        plot_orthogonal_slices(image, cam, region=region[:, :-1])
    with pytest.raises(ValueError, match="single channel"):
        plot_orthogonal_slices(image, np.stack([cam, cam]))
    with pytest.raises(ValueError, match="vmin"):
        plot_orthogonal_slices(image, cam, vmin=1.0, vmax=0.5)


def test_a_grid_stored_lps_is_shown_like_its_ras_copy(volumes):
    """One display convention: the same voxels stored with flipped and permuted axes (an affine saying so) give the
    same picture as their RAS-ordered copy, through the same peak, titled by the file's own voxel indices."""
    image, cam, region = volumes
    ras = np.diag([1.5, 1.5, 2.0, 1.0])
    lps = np.zeros((4, 4))
    lps[0, 1], lps[1, 0], lps[2, 2], lps[3, 3] = -1.5, -1.5, 2.0, 1.0
    lps[:3, 3] = [1.5 * (SHAPE[0] - 1), 1.5 * (SHAPE[1] - 1), 0.0]

    def file_order(volume):  # file axes (j, i, k) of the RAS copy, the first two reversed
        return np.ascontiguousarray(np.transpose(volume, (1, 0, 2))[::-1, ::-1])

    reference = plot_orthogonal_slices(image, cam, region=region, affine=ras, colorbar=False)
    shown = plot_orthogonal_slices(file_order(image), file_order(cam), region=file_order(region), affine=lps,
                                   colorbar=False)  # fmt: skip
    assert_same_planes(shown, reference)  # the titles differ: they name the file's own axes
    i, j, k = PEAK
    file_peak = (SHAPE[1] - 1 - j, SHAPE[0] - 1 - i, k)
    assert _titles(shown) == {"axial": f"axial z={k}", "coronal": f"coronal x={file_peak[0]}",
                              "sagittal": f"sagittal y={file_peak[1]}"}  # fmt: skip
    letters = {ax.get_label(): [box.txt.get_text() for box in ax.artists] for ax in shown.axes}
    assert letters == {"axial": ["R", "L", "A", "P"], "coronal": ["R", "L", "S", "I"], "sagittal": ["A", "P", "S", "I"]}
    meta = MetaTensor(torch.from_numpy(file_order(image))[None], affine=torch.from_numpy(lps))
    from_meta = plot_orthogonal_slices(meta, file_order(cam), region=file_order(region), colorbar=False)
    assert_same_planes(from_meta, reference)  # the MetaTensor's affine
    assert _titles(from_meta) == _titles(shown)
