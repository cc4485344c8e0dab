# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from monai_segcam.visualize import figure_to_array, plot_cam_panel

from .conftest import PEAK

ROWS = ("encoder.1", "bottleneck", "decoder.1")
COLUMNS = ("liver", "tumour")


def _cams(cam):
    return {row: dict.fromkeys(COLUMNS, cam * (r + 1)) for r, row in enumerate(ROWS)}


def _cells(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize("scale, n_colorbars", [("row", 3), ("shared", 1)])
def test_panel_grid_and_labels(volumes, scale, n_colorbars):
    image, cam, _region = volumes
    fig = plot_cam_panel(torch.from_numpy(image), _cams(torch.from_numpy(cam)), scale=scale, title="flow")
    cells = _cells(fig)
    assert len(cells) == len(ROWS) * len(COLUMNS)
    assert [ax.get_label() for ax in cells] == [f"{r}/{c}" for r in ROWS for c in COLUMNS]
    assert [cells[i * len(COLUMNS)].get_ylabel() for i in range(len(ROWS))] == list(ROWS)
    assert [ax.get_title() for ax in cells[: len(COLUMNS)]] == list(COLUMNS)
    assert len(fig.axes) - len(cells) == n_colorbars
    assert fig.get_suptitle() == f"flow (axial z={PEAK[2]})"  # default slice: peak of the first map
    limits = {ax.images[1].get_clim() for ax in cells}
    assert len(limits) == (3 if scale == "row" else 1)


def test_panel_slice_choice(volumes):
    image, cam, region = volumes
    assert plot_cam_panel(image, _cams(cam), region=region, axis="sagittal").get_suptitle() == "sagittal x=6"
    assert plot_cam_panel(image, _cams(cam), axis="coronal", slice_index=2).get_suptitle() == "coronal y=2"
    with pytest.raises(ValueError, match="outside"):
        plot_cam_panel(image, _cams(cam), axis="coronal", slice_index=16)


def test_panel_missing_cell_and_zero_maps(volumes):
    image, cam, _ = volumes
    cams = {"a": {"x": np.zeros_like(cam)}, "b": {"x": np.zeros_like(cam), "y": np.zeros_like(cam)}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_cam_panel(image, cams)
        figure_to_array(fig)
    cells = _cells(fig)
    assert [ax.get_label() for ax in cells] == ["a/x", "a/y", "b/x", "b/y"]
    assert not cells[1].images  # a/y is empty


def test_panel_bad_inputs(volumes):
    image, cam, _ = volumes
    with pytest.raises(ValueError, match="non-empty mapping"):
        plot_cam_panel(image, {})
    with pytest.raises(ValueError, match="cams\\['a'\\]"):
        plot_cam_panel(image, {"a": cam})
    with pytest.raises(ValueError, match="spatial shape"):
        plot_cam_panel(image, {"a": {"b": cam[1:]}})
    with pytest.raises(ValueError):
        plot_cam_panel(image, _cams(cam), axis="oblique")
    with pytest.raises(ValueError):
        plot_cam_panel(image, _cams(cam), scale="cell")


def test_panel_scales_each_map_to_its_own_maximum_by_default(volumes):
    """A weak map beside a strong one keeps its own colour range (not hidden), and the colour bars say which scale."""
    image, cam, _ = volumes
    fig = plot_cam_panel(image, {"pre_head": {"gradcam": cam * 16.0, "hirescam": cam * 109.0}})
    cells = _cells(fig)
    assert [ax.images[1].get_clim()[1] for ax in cells] == pytest.approx([16.0, 109.0])
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2 and {bar.get_ylabel() for bar in bars} == {"own scale"}
    shared = plot_cam_panel(image, {"pre_head": {"gradcam": cam * 16.0, "hirescam": cam * 109.0}}, scale="shared")
    assert [ax.images[1].get_clim()[1] for ax in _cells(shared)] == pytest.approx([109.0, 109.0])
    assert [ax.get_ylabel() for ax in shared.axes if ax.get_label() == "<colorbar>"] == ["shared scale"]
