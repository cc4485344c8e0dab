# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The one writer of CAM files: NIfTI maps, PNG views and DICOM Parametric Maps (:py:mod:`.dicom`), named by :py:func:`~monai_segcam.outputs.cam_file_name`
and written atomically (:py:func:`~monai_segcam.outputs.atomic_output`), used by every front door (handlers,
transforms, command line)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import optional_import

from ..visualize.figures import save_figure
from .dicom import dicom_series, write_dicom_seg, write_parametric_map
from .files import atomic_output, safe_path
from .names import cam_file_name, panel_file_name, segmentation_file_name

nib, _ = optional_import("nibabel")
if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_nifti", "write_png", "write_text", "CAMWriter"]

ArrayLike = torch.Tensor | np.ndarray


def write_nifti(
    data: ArrayLike,
    path: str | os.PathLike,
    affine: ArrayLike | None = None,
    output_dir: str | os.PathLike | None = None,
    channel_dim: int | None = 0,
    output_dtype: np.dtype | type = np.float32,
) -> str:
    """Write ``data`` as a NIfTI file with nibabel, atomically.

    Like MONAI's ``NibabelWriter``: the array is stored channel last (a single channel is squeezed), the affine is
    the voxel-to-world (RAS) affine, set as sform and qform (code 1), and no resampling happens.

    Args:
        data: a channel-first array ``(C, *spatial)`` (``channel_dim=0``) or a spatial array (``channel_dim=None``).
            A ``MetaTensor`` provides its own affine.
        path: destination file (``.nii`` or ``.nii.gz``). Relative to ``output_dir`` when that is given.
        affine: the voxel-to-world (RAS) affine; defaults to the ``MetaTensor``'s. A plain array needs one: the
            writer never invents a geometry.
        output_dir: when given, ``path`` must lie inside it (see :py:func:`~monai_segcam.outputs.safe_path`).
        channel_dim: the channel dimension of ``data``, or ``None``.
        output_dtype: the data type stored in the file.

    Returns:
        the path written.

    Raises:
        ValueError: without an affine, or with one that is not 4x4.
        OSError: when the file cannot be written (naming it); no partial file is left.

    Example:
        .. code-block:: python

            write_nifti(cam[0:1], "case1_cam_hirescam_pre_head_class1.nii.gz", output_dir="out")  # a MetaTensor
    """
    path = safe_path(output_dir, os.fspath(path)) if output_dir is not None else os.fspath(path)
    if affine is None and isinstance(data, MetaTensor):
        affine = data.affine
    if affine is None:
        raise ValueError(f"No affine for {path}: give `affine=` (a plain array has no voxel-to-world geometry).")
    affine = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be a 4x4 voxel-to-world matrix, got shape {affine.shape}.")
    array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if channel_dim is not None:
        array = np.moveaxis(array, channel_dim, -1)
        array = array[..., 0] if array.shape[-1] == 1 else array
    image = nib.Nifti1Image(np.ascontiguousarray(array.astype(output_dtype, copy=False)), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    with atomic_output(path) as tmp:
        nib.save(image, tmp)
    return path


def write_png(figure: Figure, path: str | os.PathLike, dpi: float = 100) -> str:
    """Write a matplotlib figure as a PNG of ``figsize * dpi`` pixels, atomically; returns the path.

    Example:
        .. code-block:: python

            write_png(plot_orthogonal_slices(image, cam), "out/case1_cam.png")
    """
    return save_figure(figure, path, dpi)  # the one atomic figure writer


def write_text(text: str, path: str | os.PathLike) -> str:
    """Write ``text`` (UTF-8) atomically, e.g. a CSV or JSON document; returns the path.

    Example:
        .. code-block:: python

            write_text(json.dumps(summary, indent=2) + "\\n", "out/case1/case1_segcam.json")
    """
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as stream:
        stream.write(text)
    return os.fspath(path)


class CAMWriter:
    """Writes the CAMs of cases into ``output_dir``: per layer and class a NIfTI map, a PNG of orthogonal slices
    and/or a DICOM Parametric Map, named ``{case}_cam_{method}_{layer}_class{c}`` (:py:func:`~monai_segcam.outputs.cam_file_name`), each
    file atomically.

    Args:
        output_dir: the folder; every path is confined to it.
        nifti: write NIfTI maps.
        png: write PNG views (needs matplotlib).
        center: the PNG planes' centre, ``"peak"`` or ``"centroid"`` (see
            :py:func:`~monai_segcam.visualize.plot_orthogonal_slices`).
        dpi: PNG resolution.
        dicom: write DICOM Parametric Maps (and :py:meth:`write_dicom_segmentation`), in the study and frame of
            reference of the DICOM series each map comes from (needs ``monai-segcam[dicom]``).
        slicer: with :py:func:`~monai_segcam.outputs.write_case_folder`, also a 3D Slicer scene and colour table
            (:py:mod:`~monai_segcam.outputs.slicer`).

    Example:
        .. code-block:: python

            writer = CAMWriter("cams", png=True)
            files = writer.write("case1", "hirescam", {"pre_head": cam}, classes=[1], image=image[0], regions=region)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        nifti: bool = True,
        png: bool = False,
        center: str = "peak",
        dpi: float = 100,
        dicom: bool = False,
        slicer: bool = False,
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.nifti, self.png, self.center, self.dpi, self.dicom = nifti, png, center, dpi, dicom
        self.slicer = slicer
        self._transaction: list[str] | None = None
        self._series: dict[str, list[Any]] = {}

    @property
    def extensions(self) -> list[str]:
        """The file extensions written per layer and class."""
        return [ext for ext, on in ((".nii.gz", self.nifti), (".png", self.png), (".dcm", self.dicom)) if on]

    def paths(self, case: str, method: str, layers: Sequence[str], classes: Sequence[int]) -> list[str]:
        """Every file :py:meth:`write` writes for a case (e.g. to resume: the case is done when all exist)."""
        return [self.path(case, method, layer, c, ext) for layer in layers for c in classes for ext in self.extensions]

    def path(self, case: str, method: str, layer: str, class_index: int, extension: str) -> str:
        """The path of one file, inside ``output_dir``."""
        return safe_path(self.output_dir, cam_file_name(case, method, layer, class_index, extension))

    def write(
        self,
        case: str,
        method: str,
        maps: Mapping[str, ArrayLike],
        classes: Sequence[int],
        affine: ArrayLike | None = None,
        image: ArrayLike | None = None,
        regions: ArrayLike | None = None,
        shown: Mapping[str, ArrayLike] | None = None,
        class_names: Mapping[int, str] | None = None,
        source: Any = None,
    ) -> dict[tuple[str, int], list[str]]:
        """Write one case's maps; returns the paths written per ``(layer, class)``.

        Args:
            case: the case name.
            method: the CAM method's name.
            maps: ``{layer: (len(classes), *spatial)}``, as saved (``MetaTensor`` or array with ``affine``).
            classes: the class index of each channel.
            affine: the maps' voxel-to-world affine (defaults to each ``MetaTensor``'s own).
            image: the background ``(*spatial)`` of the PNGs, on the grid of ``shown``.
            regions: the explained region per class ``(len(classes), *spatial)``, drawn as a contour in the PNGs.
            shown: the maps drawn in the PNGs (default ``maps``), e.g. on the network grid of ``image``; then the
                pictures take their orientation from ``shown``'s or ``image``'s ``MetaTensor`` affine.
            class_names: class index -> name, added to the PNG titles.
            source: the DICOM series the maps come from (its folder or files; default: each ``MetaTensor``'s
                ``filename_or_obj``), for DICOM output.

        Every PNG follows the package's one display convention
        (:py:mod:`~monai_segcam.visualize.planes`): drawn on the maps' own voxel grid in the nearest RAS orientation
        of its affine, with orientation letters, through the map's peak (``center``) on that grid.
        """
        drawn = maps if shown is None else shown
        picture_affine = affine if shown is None else None
        files: dict[tuple[str, int], list[str]] = {}
        for layer, cam in maps.items():
            for j, c in enumerate(classes):
                written = files.setdefault((layer, c), [])
                name = f" ({class_names[c]})" if class_names and class_names.get(c) else ""
                if self.nifti:
                    path = self.path(case, method, layer, c, ".nii.gz")
                    written.append(self.record(write_nifti(cam[j : j + 1], path, affine)))
                if self.png:
                    region = None if regions is None else regions[j]
                    path = self.path(case, method, layer, c, ".png")
                    title = f"{case} {method} {layer} class {c}{name}"
                    picture = self._view(image, drawn[layer][j], region, title, path, picture_affine)
                    written.append(self.record(picture))
                if self.dicom:
                    path = self.path(case, method, layer, c, ".dcm")
                    map_affine = _affine_of(cam, affine, path)
                    series = self.series(source if source is not None else _source_of(cam), path)
                    description = f"{method} {layer} class {c}{name}"
                    written.append(self.record(write_parametric_map(cam[j], map_affine, series, path, description)))
        return files

    def write_panels(
        self, case: str, image: Any, maps: Mapping[tuple[str, str], Any], classes: Sequence[int], regions: Any = None,
        affine: ArrayLike | None = None,
    ) -> list[str]:  # fmt: skip
        """One PNG per class, ``{case}_cam_class{c}_panel.png``, of every map of a case, layers x methods
        (:py:func:`~monai_segcam.visualize.plot_cam_panel`, each map on its own scale); ``maps`` by ``(layer,
        method)``, ``(n, *spatial)``, on the grid of ``image`` with ``affine`` (default: a ``MetaTensor`` image's);
        the slice goes through the first map's peak (the writer's ``center``)."""
        from monai_segcam.visualize import plot_cam_panel

        paths = []
        for j, c in enumerate(classes):
            panel: dict[str, dict[str, Any]] = {}
            for (layer, method), cam in maps.items():
                panel.setdefault(layer, {})[method] = cam[j]
            region = None if regions is None or not regions[j].any() else regions[j]
            title = f"{case} | class {c}"
            figure = plot_cam_panel(image, panel, region=region, center=self.center, title=title, affine=affine)
            paths.append(self.record(write_png(figure, safe_path(self.output_dir, panel_file_name(case, c)), self.dpi)))
            figure.clear()
        return paths

    def write_segmentation(self, case: str, segmentation: ArrayLike, affine: ArrayLike) -> str:
        """Write ``{case}_seg.nii.gz``: a label map ``(*spatial)`` (uint8, uint16 past 255 classes), or per class
        masks ``(C, *spatial)`` (multi-label) stored as ``(X, Y, Z, C)``; returns its path."""
        path = safe_path(self.output_dir, segmentation_file_name(case))
        seg = np.asarray(segmentation)
        if seg.dtype == bool:
            return self.record(write_nifti(seg.astype(np.uint8), path, affine, channel_dim=0, output_dtype=np.uint8))
        dtype = np.uint8 if seg.max(initial=0) < 256 else np.uint16
        return self.record(write_nifti(seg, path, affine, channel_dim=None, output_dtype=dtype))

    def write_dicom_segmentation(
        self, case: str, segmentation: ArrayLike, affine: ArrayLike, source: Any,
        class_names: Mapping[int, str] | None = None,
    ) -> str:  # fmt: skip
        """Write ``{case}_seg.dcm``: the segmentation of :py:meth:`write_segmentation` as DICOM SEG in the study and
        frame of reference of the DICOM series ``source`` (:py:func:`~monai_segcam.outputs.write_dicom_seg`)."""
        path = safe_path(self.output_dir, segmentation_file_name(case, ".dcm"))
        return self.record(write_dicom_seg(segmentation, affine, self.series(source, path), path, class_names))

    def series(self, source: Any, path: str) -> list[Any]:
        """The headers of the DICOM series ``source`` (read once per writer) for the DICOM file ``path``."""
        if source is None:
            raise ValueError(f"No DICOM source series for {path}: DICOM output needs a DICOM series input.")
        key = os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(list(map(os.fspath, source)))
        if key not in self._series:
            self._series[key] = dicom_series(source)
        return self._series[key]

    def _view(self, image: Any, cam: Any, region: Any, title: str, path: str, affine: Any = None) -> str:
        from monai_segcam.visualize import plot_orthogonal_slices

        figure = plot_orthogonal_slices(image, cam, region=region, center=self.center, title=title, affine=affine)
        try:
            return write_png(figure, path, self.dpi)
        finally:
            figure.clear()

    def record(self, path: str) -> str:
        """Count ``path`` as part of the current :py:meth:`all_or_nothing` block (the writer's own files and those
        the caller writes beside them); returns it."""
        if self._transaction is not None:
            self._transaction.append(path)
        return path

    @contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """A block whose files are all kept, or all removed when it raises (also ``KeyboardInterrupt``).

        Example:
            .. code-block:: python

                with writer.all_or_nothing():
                    writer.write("case1", "hirescam", maps, classes=[1])
                    write_text(summary, writer.output_dir + "/case1_segcam.json")  # counted with writer.record(...)
        """
        outer, self._transaction = self._transaction, []
        created = not os.path.isdir(self.output_dir)
        try:
            yield
        except BaseException:
            for path in self._transaction:
                if os.path.exists(path):
                    os.unlink(path)
            if created and os.path.isdir(self.output_dir) and not os.listdir(self.output_dir):
                os.rmdir(self.output_dir)
            raise
        finally:
            if outer is not None:
                outer.extend(self._transaction)
            self._transaction = outer


def _affine_of(cam: Any, affine: ArrayLike | None, path: str) -> Any:
    if affine is None and isinstance(cam, MetaTensor):
        affine = cam.affine
    if affine is None:
        raise ValueError(f"No affine for {path}: give `affine=` (a plain array has no voxel-to-world geometry).")
    return np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)


def _source_of(cam: Any) -> Any:
    """The source file (a DICOM series folder or files) of a ``MetaTensor``'s metadata, or ``None``."""
    return getattr(cam, "meta", {}).get("filename_or_obj") or None
