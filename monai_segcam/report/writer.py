# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The review report writer: cases in one at a time, a folder out that opens in a browser from ``file://``.

Layout of ``output_dir``::

    index.html            the table of cases (sortable, filterable, flagged cases marked) and the report's size
    report.json           the table's data: per case its pages, Dice, and per map the statistics and the flag
    cases/<case>.html     one page per case: statistics and the 3D viewer
    cases/<case>.js       the case's volumes (gzipped uint8 NIfTI, base64) for the viewer; written by add_case
    thumbs/<case>.png     the table's thumbnail
    assets/               the viewer and table scripts and the style sheet (plain JavaScript, no network)
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch

from ..outputs import atomic_output, safe_token
from . import pages
from .pictures import COLORMAPS, DEFAULT_COLORMAP, class_color, encode_png, thumbnail
from .stats import DEFAULT_FLAG_THRESHOLD, copy_row_statistics, dice, finite_or_none, is_flagged, map_statistics
from .structures import cohort_heatmap
from .volumes import (
    MAX_BITMASK_CLASSES,
    Grid,
    as_volume,
    class_masks,
    encode_nifti_gz,
    label_channels,
    quantize,
    report_grid,
    resample,
)

__all__ = ["SegCAMReport", "cams_from_layers", "report_size", "write_epochs_index"]

CamKey = tuple[str, str, int]
ASSETS = ("report.css", "index.js", "viewer.js")
_VIEWER_ONLY = ("key", "peak", "shown_max", "full_shape")  # map entries' fields the index table does not need


def cams_from_layers(
    maps: Mapping[str, torch.Tensor | np.ndarray], method: str, classes: Sequence[int]
) -> dict[CamKey, torch.Tensor | np.ndarray]:
    """``{(layer, method, class): map}`` from maps per layer ``(n_classes, *spatial)`` (or ``(1, n_classes,
    *spatial)``, as an engine's result holds them), their channels being ``classes``.

    Example:
        .. code-block:: python

            result = SegCAM(net, layers=["bottleneck", "pre_head"])(image, classes=[1, 2])
            cams = cams_from_layers(result, "hirescam", [1, 2])  # 4 maps, each (1, *spatial) with the affine
    """
    cams: dict[CamKey, Any] = {}
    for layer, value in maps.items():
        item = value[0] if value.ndim == 5 else value
        if item.shape[0] != len(classes):
            raise ValueError(f"Layer {layer!r}: {item.shape[0]} channels for {len(classes)} classes {list(classes)}.")
        for j, c in enumerate(classes):
            cams[(str(layer), str(method), int(c))] = item[j : j + 1]
    return cams


def report_size(folder: str | os.PathLike) -> int:
    """The bytes of every file under ``folder``.

    Example:
        .. code-block:: python

            print(f"{report_size('report') / 1e6:.1f} MB")
    """
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(os.fspath(folder)) for f in files)


class SegCAMReport:
    """Write a review report of Seg-CAMs: ``index.html`` (one row per case) and a page per case with a 3D viewer.

    Cases come in one at a time (:py:meth:`add_case`), so a data set of any size is reported without keeping its
    volumes in memory: each case's volumes are stored once, at once, on a report grid of at most ``max_size`` voxels
    per side (the CAMs at most ``cam_max_size``; see :py:mod:`~monai_segcam.report.volumes`), as gzipped ``uint8``
    NIfTI inside ``cases/<case>.js``.
    :py:meth:`write` writes the pages; call it at the end (again after further cases, it rewrites them).

    A case's maps are *flagged* when their ``relevance_mass_region`` (the share of the map's positive mass inside the
    explained region) is below ``flag_threshold``: the model's evidence lies mostly outside what it segmented. The
    index page lets the reader change the threshold and the map whose statistics are shown.

    The pages need no network and no server: open ``index.html`` from the file system (any current Chrome, Edge,
    Firefox or Safari; the viewer draws with 2D canvases and decompresses with ``DecompressionStream``). Zip the
    folder to send it.

    Args:
        output_dir: the report folder (created).
        title: the title of the index page.
        flag_threshold: the default flag threshold on ``relevance_mass_region`` (see
            :py:data:`~monai_segcam.report.stats.DEFAULT_FLAG_THRESHOLD`, 0.5).
        max_size: the largest side of the stored image, segmentation and label, in voxels (default 96; the image
            is most of a report's size: see the figures in ``docs/report.md``).
        cam_max_size: the largest side of the stored CAMs (default: half of ``max_size``; the viewer interpolates
            them trilinearly, and their detail is coarser than the image's anyway).
        class_names: names of the classes (label values, or channels of a multi-label output) by index.
        multi_label: segmentations and labels with several channels are independent binary masks (sigmoid
            outputs) rather than one-hot or scores (argmax).
        image_channel: the image channel shown.

    Example:
        .. code-block:: python

            report = SegCAMReport("report", class_names={1: "liver", 2: "tumour"})
            for name, image, seg, label in cases:  # image, seg, label: (C, X, Y, Z) MetaTensors
                result = SegCAM(net, layers=["bottleneck", "pre_head"])(image[None], classes=[1, 2])
                report.add_case(name, image, seg, cams_from_layers(result, "hirescam", [1, 2]), label=label)
            report.write()  # report/index.html
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        title: str = "Seg-CAM review report",
        flag_threshold: float = DEFAULT_FLAG_THRESHOLD,
        max_size: int = 96,
        cam_max_size: int | None = None,
        class_names: Mapping[int, str] | Sequence[str] | None = None,
        multi_label: bool = False,
        image_channel: int = 0,
    ) -> None:
        if not 0.0 <= flag_threshold <= 1.0:
            raise ValueError(f"flag_threshold is a share of relevance mass in [0, 1], got {flag_threshold}.")
        cam_max_size = max_size // 2 if cam_max_size is None else cam_max_size
        if min(max_size, cam_max_size) < 4:
            raise ValueError(f"max_size and cam_max_size must be at least 4 voxels, got {max_size}, {cam_max_size}.")
        self.output_dir = os.fspath(output_dir)
        self.title = title
        self.flag_threshold = float(flag_threshold)
        self.max_size, self.cam_max_size = int(max_size), int(cam_max_size)
        names = dict(enumerate(class_names)) if isinstance(class_names, Sequence) else dict(class_names or {})
        self.class_names = {int(k): str(v) for k, v in names.items()}
        self.multi_label = multi_label
        self.image_channel = image_channel
        self.cases: dict[str, dict[str, Any]] = {}

    # public --------------------------------------------------------------------------------------------------------

    def add_case(
        self,
        name: str,
        image: torch.Tensor | np.ndarray,
        segmentation: torch.Tensor | np.ndarray | None = None,
        cams: Mapping[CamKey, torch.Tensor | np.ndarray] | None = None,
        rows: Sequence[Mapping[str, Any]] | None = None,
        label: torch.Tensor | np.ndarray | None = None,
        structures: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Store one case's volumes and thumbnail; returns its summary (JSON-compatible, kept in :py:attr:`cases`).

        Args:
            name: the case name (shown; a file-name-safe form names its files).
            image: ``(C, X, Y, Z)`` or ``(X, Y, Z)``, a ``MetaTensor`` (its affine places every other volume) or a
                plain array (then every volume must lie on its grid).
            segmentation: the prediction: a label map ``(1, X, Y, Z)``, or channels ``(C, X, Y, Z)`` (one-hot or
                scores: argmax; with ``multi_label``: binary masks), on any grid (resampled, nearest).
            cams: ``{(layer, method, class): map}`` with maps ``(X, Y, Z)`` or ``(1, X, Y, Z)`` on any grid
                (:py:func:`cams_from_layers` builds it from maps per layer).
            rows: the case's statistics rows as in the handler's CSV (``layer``, ``method``, ``class``,
                ``relevance_mass_region``, ...); maps without a row get statistics computed here.
            label: the ground truth, in the forms of ``segmentation``; gives Dice and the label statistics.
            structures: the case's structure table (:py:func:`~monai_segcam.outputs.structure_rows`), shown as a
                heatmap on its page and averaged over the cases on the index page.

        Raises:
            ValueError: for a case name given twice, or volumes that are not 3D.
        """
        if name in self.cases:
            raise ValueError(f"Case {name!r} was added already.")
        image_array, image_grid = as_volume(image)
        if not 0 <= self.image_channel < image_array.shape[0]:
            channels = image_array.shape[0]
            raise ValueError(f"image_channel {self.image_channel} is not a channel of an image with {channels}.")
        grid = report_grid(image_grid, self.max_size)
        shown = resample(image_array[self.image_channel : self.image_channel + 1], image_grid, grid)[0]
        volumes = {"image": _encoded(shown, grid, "image")}
        seg = self._labels(segmentation, image_grid, grid)
        truth = self._labels(label, image_grid, grid)
        for key, value in (("segmentation", seg), ("label", truth)):
            if value is not None:
                volumes[key] = _encoded(value[2], grid, "labels")
        maps, cam_volumes = self._maps(cams or {}, image_grid, grid, seg, truth)
        cam_grid = report_grid(grid, self.cam_max_size)  # the report grid is RAS-ordered already: a coarser copy
        for entry, values in zip(maps, cam_volumes):
            volumes[entry["key"]] = _encoded(resample(values[None], grid, cam_grid)[0], cam_grid, "cam")
            entry["shown_max"] = volumes[entry["key"]]["max"]  # what the viewer's colour bar ends at
        copy_row_statistics(maps, rows, case=None)
        classes = self._classes(maps, seg, truth)
        token = self._token(name)
        summary = {
            "name": name,
            "token": token,
            "shape": list(grid.shape),
            "dice": self._dice(classes, seg, truth),
            "maps": maps,
            "classes": classes,
            "has_label": truth is not None,
            "structures": [_structure_row(row) for row in structures or []],
        }
        data = {**summary, "spacing": list(grid.spacing), "affine": grid.affine.tolist(), "volumes": volumes}
        data.update(multi_label=self.multi_label, colormaps=COLORMAPS, default_colormap=DEFAULT_COLORMAP)
        self._write_text(f"cases/{token}.js", "window.SEGCAM_CASE = " + json.dumps(data) + ";\n")
        slices = _thumbnail_slices(shown, cam_volumes[0] if maps else None, maps, seg, classes, self.multi_label)
        picture = thumbnail(*slices)
        self._write_bytes(f"thumbs/{token}.png", encode_png(picture))
        self.cases[name] = summary
        return summary

    def add_summary(self, summary: Mapping[str, Any]) -> None:
        """Add a case whose files another process wrote into this folder (e.g. another rank), by its summary."""
        self.cases.setdefault(str(summary["name"]), dict(summary))

    def update_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Take the statistics of ``rows`` (the handler's CSV rows of any cases) into the cases they name."""
        for name, summary in self.cases.items():
            copy_row_statistics(summary["maps"], rows, case=name)

    def write(self) -> str:
        """Write the assets, the case pages and ``index.html``; returns the index's path."""
        for asset in ASSETS:
            source = resources.files("monai_segcam.report").joinpath("assets", asset)
            self._write_bytes(f"assets/{asset}", source.read_bytes())
        names = list(self.cases)
        for i, name in enumerate(names):
            summary = self.cases[name]
            neighbours = [self.cases[names[j]]["token"] if 0 <= j < len(names) else None for j in (i - 1, i + 1)]
            html = pages.case_page(summary, self.flag_threshold, self.class_names, *neighbours)
            self._write_text(f"cases/{summary['token']}.html", html)
        index = {"title": self.title, "flag_threshold": self.flag_threshold, "cases": self.index_rows()}
        self._write_text("report.json", json.dumps(index, indent=1) + "\n")
        path = os.path.join(self.output_dir, "index.html")
        if os.path.exists(path):
            os.remove(path)
        cohort = cohort_heatmap({name: s.get("structures", []) for name, s in self.cases.items()}, self.class_names)
        others, size = report_size(self.output_dir), 0
        for _ in range(5):  # the page states the folder's size, its own bytes included: find the fixed point
            html = pages.index_page(self.title, index, size, cohort)
            if others + len(html.encode("utf-8")) == size:
                break
            size = others + len(html.encode("utf-8"))
        self._write_text("index.html", html)
        return path

    # helpers -------------------------------------------------------------------------------------------------------

    def _labels(self, volume: Any, image_grid: Grid, grid: Grid) -> tuple[np.ndarray, Grid, np.ndarray] | None:
        """A label map or bitmask on its own grid (for Dice), that grid, and the map on the report grid."""
        if volume is None:
            return None
        array, own = as_volume(volume, image_grid)
        labels = label_channels(array, self.multi_label)
        shown = resample(labels[None].astype(np.float32), own, grid, nearest=True)[0]
        return labels, own, np.rint(shown).astype(np.int64)

    def _maps(self, cams, image_grid: Grid, grid: Grid, seg, truth) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """The map entries (key, names, peak, statistics) and their values on the report grid."""
        entries, values = [], []
        for i, ((layer, method, c), volume) in enumerate(cams.items()):
            array, own = as_volume(volume, image_grid)
            if array.shape[0] != 1:
                raise ValueError(f"CAM {(layer, method, c)}: one channel per map, got shape {tuple(array.shape)}.")
            shown = resample(array, own, grid)[0]
            region = None if seg is None else class_masks(seg[2], [int(c)], self.multi_label)[0]
            mask = None if truth is None else class_masks(truth[2], [int(c)], self.multi_label)[0]
            entry = {"key": f"cam{i}", "layer": str(layer), "method": str(method), "class": int(c)}
            entry["peak"] = [int(v) for v in np.unravel_index(int(np.argmax(shown)), shown.shape)]
            entry.update(map_statistics(shown, region, mask))
            entry["max"] = finite_or_none(np.nan_to_num(array).max()) if array.size else None  # full resolution
            entry["full_shape"] = list(own.shape)
            entries.append(entry)
            values.append(shown)
        return entries, values

    def _classes(self, maps, seg, truth) -> list[dict[str, Any]]:
        """The classes of the legend: explained classes and those present in the segmentation or label."""
        present = {entry["class"] for entry in maps}
        for value in (seg, truth):
            if value is None:
                continue
            if self.multi_label:
                bits = int(np.bitwise_or.reduce(value[2].ravel().astype(np.int64)))
                present |= {c for c in range(MAX_BITMASK_CLASSES) if bits >> c & 1}
            else:
                present |= {int(v) for v in np.unique(value[2]) if v != 0}
        shift = int(self.multi_label)  # multi-label channel 0 is a class, not the background
        return [
            {"index": c, "name": self.class_names.get(c, f"class {c}"), "color": list(class_color(c + shift))}
            for c in sorted(present)
        ]

    def _dice(self, classes, seg, truth) -> dict[str, float | None]:
        if seg is None or truth is None:
            return {}
        pred, gt = (seg[0], truth[0]) if seg[1].same_as(truth[1]) else (seg[2], truth[2])  # own grid when shared
        indices = [entry["index"] for entry in classes]
        if not indices:
            return {}
        masks_pred, masks_gt = class_masks(pred, indices, self.multi_label), class_masks(gt, indices, self.multi_label)
        return {str(c): dice(p, g) for c, p, g in zip(indices, masks_pred, masks_gt)}

    def index_rows(self) -> list[dict[str, Any]]:
        """The rows of the index table (also in ``report.json``): per case its pages, Dice and maps with their
        statistics and ``flagged`` at the default threshold."""
        rows = []
        for summary in self.cases.values():
            maps = [{**entry, "flagged": is_flagged(entry, self.flag_threshold)} for entry in summary["maps"]]
            rows.append({
                "name": summary["name"],
                "page": f"cases/{summary['token']}.html",
                "thumb": f"thumbs/{summary['token']}.png",
                "dice": summary["dice"],
                "has_label": summary["has_label"],
                "maps": [{k: v for k, v in entry.items() if k not in _VIEWER_ONLY} for entry in maps],
            })  # fmt: skip
        return rows

    def _token(self, name: str) -> str:
        used = {summary["token"] for summary in self.cases.values()}
        token, n = safe_token(name, default="case"), 1
        while token in used:
            n += 1
            token = f"{safe_token(name, default='case')}_{n}"
        return token

    def _write_text(self, relative: str, text: str) -> None:
        self._write_bytes(relative, text.encode("utf-8"))

    def _write_bytes(self, relative: str, data: bytes) -> None:
        path = os.path.join(self.output_dir, *relative.split("/"))
        with atomic_output(path) as tmp, open(tmp, "wb") as stream:
            stream.write(data)


def write_epochs_index(root: str | os.PathLike, title: str = "Seg-CAM review report") -> str:
    """Write ``root/index.html`` linking the reports ``root/epoch_NNNN/`` (one per validation epoch); returns it.

    Example:
        .. code-block:: python

            write_epochs_index("cams/report")  # cams/report/index.html -> epoch_0001/index.html, ...
    """
    root = os.fspath(root)
    epochs = []
    for folder in sorted(os.listdir(root)):
        index = os.path.join(root, folder, "report.json")
        if folder.startswith("epoch_") and os.path.isfile(index):
            with open(index, encoding="utf-8") as stream:
                cases = json.load(stream)["cases"]
            epochs.append((folder, len(cases), sum(any(m["flagged"] for m in case["maps"]) for case in cases)))
    path = os.path.join(root, "index.html")
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as stream:
        stream.write(pages.epochs_page(f"{title}: epochs", epochs))
    return path


def _structure_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A structure row as the report keeps it (JSON: strings and floats)."""
    names = ("layer", "method", "class", "structure")
    return {**{key: str(row[key]) for key in names}, "share": float(row["share"]), "density": float(row["density"])}


def _encoded(values: np.ndarray, grid: Grid, kind: str) -> dict[str, Any]:
    codes, slope, inter = quantize(values, kind)
    data = base64.b64encode(encode_nifti_gz(codes, grid, slope, inter)).decode("ascii")
    top = float(codes.max(initial=0)) * slope + inter  # the largest value stored (a CAM's colour bar ends there)
    return {"shape": list(grid.shape), "nifti_gz_base64": data, "slope": slope, "inter": inter, "max": top}


def _thumbnail_slices(image, cam, maps, seg, classes, multi_label):
    """The axial slice through the first map's peak (else the segmentation's centre, else the middle): the image
    in ``[0, 1]`` over its 0.5-99.5 percentile range, the map over its maximum, and the class outlines."""
    if maps:
        k = maps[0]["peak"][2]
    elif seg is not None and seg[2].any():
        k = round(float(np.nonzero(seg[2])[2].mean()))
    else:
        k = image.shape[2] // 2
    low, high = np.percentile(image, (0.5, 99.5))
    grey = (image[:, :, k] - low) / (high - low) if high > low else np.zeros(image.shape[:2])
    top = None
    if cam is not None:
        top = cam[:, :, k] / cam.max() if cam.max() > 0 else np.zeros(image.shape[:2])
    outlines = []
    if seg is not None and classes:
        indices = [entry["index"] for entry in classes]
        masks = class_masks(seg[2][:, :, k], indices, multi_label)
        outlines = [(mask, tuple(entry["color"])) for mask, entry in zip(masks, classes)]
    return grey, top, outlines
