# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Planted cases for the report tests (statistics known in closed form) and a headless Chromium for the browser
tests (Debian's ``chromium`` driven by Playwright; never a downloaded browser)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

SHAPE = (32, 28, 20)
# LPS-like storage (first two array axes run right-to-left and anterior-to-posterior), anisotropic
AFFINE = np.array([[-1.5, 0, 0, 40.0], [0, -1.5, 0, 30.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1.0]])
REGION1 = (slice(8, 16), slice(8, 16), slice(6, 12))  # class 1, 384 voxels
LABEL1 = (slice(9, 17), slice(8, 16), slice(6, 12))  # the label: shifted by one voxel, Dice 336 / 384
REGION2 = (slice(22, 26), slice(18, 22), slice(12, 16))  # class 2, 64 voxels, label identical
INSIDE = (slice(10, 14), slice(10, 14), slice(8, 10))  # 32 voxels inside REGION1 and LABEL1
OUTSIDE = (slice(24, 28), slice(2, 6), slice(2, 4))  # 32 voxels outside every region
DICE1, DICE2 = 2 * 7 * 8 * 6 / (2 * 384), 1.0
# case name -> value of the pre_head class-1 map OUTSIDE (1 INSIDE): relevance mass in region 1 / (1 + value)
PLANTED = {"alpha": 0.0, "beta": 3.0, "gamma": 0.5, "delta": 1.5}


def relevance(outside: float) -> float:
    return 1.0 / (1.0 + outside)


def as_meta(array: np.ndarray, affine: np.ndarray = AFFINE) -> MetaTensor:
    return MetaTensor(torch.as_tensor(np.asarray(array, dtype=np.float32))[None], affine=torch.as_tensor(affine))


def planted_case(outside: float, seed: int = 0) -> dict:
    """Image, prediction, label and four maps ``{(layer, "hirescam", class): map}`` of a planted case."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 0.2, SHAPE)
    seg, label = np.zeros(SHAPE), np.zeros(SHAPE)
    seg[REGION1], seg[REGION2], label[LABEL1], label[REGION2] = 1, 2, 1, 2
    image[seg > 0] += 1.0
    pre_head1 = np.zeros(SHAPE)
    pre_head1[INSIDE], pre_head1[OUTSIDE] = 1.0, outside
    bottleneck1 = np.zeros(SHAPE)
    bottleneck1[REGION1] = 2.0
    class2 = np.zeros(SHAPE)
    class2[REGION2] = 1.0
    cams = {
        ("pre_head", "hirescam", 1): as_meta(pre_head1),
        ("bottleneck", "hirescam", 1): as_meta(bottleneck1),
        ("pre_head", "hirescam", 2): as_meta(class2),
        ("bottleneck", "hirescam", 2): as_meta(class2 * 0.5),
    }
    return {"image": as_meta(image), "segmentation": as_meta(seg), "label": as_meta(label), "cams": cams}


def ras_index(index) -> tuple[int, int, int]:
    """The report grid's voxel of a voxel of the planted (LPS-like) grid: the first two axes flipped."""
    return SHAPE[0] - 1 - index[0], SHAPE[1] - 1 - index[1], index[2]


def case_data(report_dir: Path, token: str) -> dict:
    """The viewer data of a case (``cases/<token>.js``)."""
    text = (report_dir / "cases" / f"{token}.js").read_text(encoding="utf-8")
    prefix = "window.SEGCAM_CASE = "
    assert text.startswith(prefix) and text.endswith(";\n")
    return json.loads(text[len(prefix) : -2])


def stored_volume(data: dict, key: str) -> nib.Nifti1Image:
    """A stored volume of a case, decoded like the browser does (base64, gunzip, NIfTI-1)."""
    raw = gzip.decompress(base64.b64decode(data["volumes"][key]["nifti_gz_base64"]))
    return nib.Nifti1Image.from_bytes(raw)


def index_data(report_dir: Path) -> dict:
    """The table data embedded in ``index.html``."""
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    start = html.index("window.SEGCAM_INDEX = ") + len("window.SEGCAM_INDEX = ")
    return json.loads(html[start : html.index(";</script>", start)].replace("<\\/", "</"))


# headless browser --------------------------------------------------------------------------------------------------

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str:
    """The system Chromium (``SEGCAM_CHROMIUM`` or the first on the ``PATH``); skips the test when there is none."""
    override = os.environ.get("SEGCAM_CHROMIUM")
    path = override or next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)
    if not path or not os.path.exists(path):
        pytest.skip("no Chromium browser installed (Debian: apt-get install chromium) for the browser tests")
    return path


class Browser:
    """A headless Chromium with one page at a time that records console errors and uncaught exceptions."""

    def __init__(self) -> None:
        path = chromium_path()
        sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (pip install playwright) is missing")
        self._playwright = sync_api.sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=path, chromium_sandbox=False)
        self.errors: list[str] = []

    def open(self, path: Path, width: int = 1300, height: int = 900):
        """A new page showing ``path`` from ``file://``, after its scripts reported ready."""
        page = self.browser.new_page(viewport={"width": width, "height": height})
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(path.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=30000)
        return page

    def close(self) -> None:
        self.browser.close()
        self._playwright.stop()


def settle(page, action) -> None:
    """Run ``action`` (a change of a viewer control) and wait until the viewer has drawn after it."""
    count = int(page.get_attribute("#viewer", "data-rendered"))
    action()
    page.wait_for_function(f"document.getElementById('viewer').dataset.rendered > {count}")


def as_picture(png: bytes) -> np.ndarray:
    """PNG bytes as an RGB ``float`` array in ``[0, 1]``."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64) / 255


def screenshot(element) -> np.ndarray:
    """An element's (or page's) screenshot as an RGB ``float`` array in ``[0, 1]``."""
    return as_picture(element.screenshot())


def changed_fraction(a: np.ndarray, b: np.ndarray, tolerance: float = 0.05) -> float:
    """The fraction of pixels whose colour differs by more than ``tolerance`` in some channel."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((np.abs(a - b).max(-1) > tolerance).mean())


def colourful_fraction(picture: np.ndarray) -> float:
    """The fraction of pixels that are not grey (the overlays; the image itself is drawn in grey)."""
    return float((picture.max(-1) - picture.min(-1) > 0.1).mean())
