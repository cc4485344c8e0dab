# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import os

import numpy as np
import pytest

from monai_segcam.visualize import figure_to_array, plot_orthogonal_slices, save_figure

matplotlib_image = pytest.importorskip("matplotlib.image")


@pytest.mark.parametrize("dpi", [50, 100])
def test_save_figure_writes_png_of_expected_size(volumes, tmp_path, dpi):
    image, cam, region = volumes
    fig = plot_orthogonal_slices(image, cam, region=region, figsize=(6.0, 2.5))
    path = save_figure(fig, tmp_path / "sub" / "cam.png", dpi=dpi)
    assert path == os.fspath(tmp_path / "sub" / "cam.png")
    assert os.listdir(tmp_path / "sub") == ["cam.png"]  # no temporary file left behind
    pixels = matplotlib_image.imread(path)
    assert pixels.shape[:2] == (int(2.5 * dpi), int(6.0 * dpi))
    assert np.ptp(pixels[..., :3]) > 0  # not a single flat colour
    save_figure(fig, path, dpi=dpi)  # overwrites in place
    assert os.listdir(tmp_path / "sub") == ["cam.png"]


def test_save_figure_cleans_up_on_failure(tmp_path):
    class Broken:
        def savefig(self, *args, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_figure(Broken(), tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


def test_a_killed_figure_write_leaves_a_temporary_the_resume_clean_up_removes(tmp_path):
    """One atomic writer: a figure's temporary is named like every other file's, so a resumed run removes it once its
    writing process is gone (here: the write stopped, its temporary kept and given a dead process id)."""
    from monai_segcam.outputs import remove_stale_temporaries

    class Killed:
        def savefig(self, path, **kwargs):
            left = os.path.join(tmp_path, os.path.basename(path).replace(f"_{os.getpid()}_", "_999999999_"))
            with open(left, "wb") as stream:
                stream.write(b"partial")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_figure(Killed(), tmp_path / "x.png")
    (left,) = os.listdir(tmp_path)
    assert left.startswith(".tmp_") and left.endswith(".png")
    assert remove_stale_temporaries(tmp_path) == [left] and os.listdir(tmp_path) == []


def test_figure_to_array(volumes):
    image, cam, _ = volumes
    fig = plot_orthogonal_slices(image, cam, figsize=(6.0, 2.5))
    arr = figure_to_array(fig)
    assert arr.dtype == np.uint8 and arr.shape == (250, 600, 3)
    assert arr.min() < arr.max()
