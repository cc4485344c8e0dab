# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""DICOM out for a DICOM series in: a map as a DICOM Parametric Map, a segmentation as DICOM SEG, written with
highdicom (``pip install "monai-segcam[dicom]"``) in the source series' study and frame of reference, so a PACS or
a DICOM viewer shows them over the series they explain.

The geometry of every frame comes from the written array's own voxel-to-world (RAS) affine, the one the NIfTI output
carries: frame ``k`` is the plane ``volume[:, :, k]`` (rows along the second axis, columns along the first), at
``ImagePositionPatient`` = the world position (LPS) of voxel ``(0, 0, k)``. On the source series' grid (the file's
own grid, as ``monai-segcam explain`` writes) the frames lie exactly on the source slices.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .files import atomic_output

__all__ = ["dicom_series", "dicom_geometry", "write_parametric_map", "write_dicom_seg", "write_dicom_series"]

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (DICOM's patient coordinates)


def _equipment() -> dict[str, str]:
    from .._version import __version__

    return {"manufacturer": "monai_segcam", "manufacturer_model_name": "monai_segcam",
            "software_versions": __version__, "device_serial_number": "0"}  # fmt: skip


def _highdicom() -> Any:
    try:
        import highdicom
        import pydicom  # noqa: F401 (highdicom's reader and writer)
    except ImportError as exc:
        raise ImportError(
            "DICOM output (--format dicom, save_dicom=True) needs highdicom and pydicom: "
            'pip install "monai-segcam[dicom]"'
        ) from exc
    return highdicom


def dicom_series(source: str | os.PathLike | Sequence[Any]) -> list[Any]:
    """The headers (pydicom datasets, without pixel data) of the one DICOM series ``source`` is: a series folder
    (MONAI's ``filename_or_obj`` of a series read from a folder) or its files.

    Raises:
        ValueError: ``source`` holds no DICOM image, or several series (naming the folder and what to do).

    Example:
        .. code-block:: python

            series = dicom_series("ct_series/")  # [Dataset, ...], one per slice
    """
    import pydicom

    _highdicom()
    if isinstance(source, (str, os.PathLike)):
        folder = os.fspath(source)
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        files = [os.path.join(folder, name) for name in names if os.path.isfile(os.path.join(folder, name))]
    else:
        folder, files = "the given files", [os.fspath(f) for f in source]
    series = []
    for path in files:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        if "SeriesInstanceUID" in dataset and "ImagePositionPatient" in dataset:
            series.append(dataset)
    uids = {str(d.SeriesInstanceUID) for d in series}
    if not series:
        raise ValueError(
            f"DICOM output needs a DICOM series input: {source} holds no DICOM image (give the series folder, or "
            "write NIfTI: --format nifti)"
        )
    if len(uids) > 1:
        raise ValueError(f"{folder} holds {len(uids)} DICOM series: give a folder of one series")
    return series


def dicom_geometry(affine: Any, depth: int) -> dict[str, Any]:
    """The DICOM plane geometry of a volume ``(X, Y, Z)`` with voxel-to-world (RAS) ``affine``, written as ``depth``
    frames ``volume[:, :, k].T`` (rows along ``Y``, columns along ``X``).

    Returns:
        ``orientation`` (``ImageOrientationPatient``: row then column direction cosines, LPS), ``pixel_spacing``
        (``PixelSpacing``: between rows, between columns, mm), ``slice_spacing`` (mm) and ``positions``
        (``ImagePositionPatient`` of each frame, LPS).

    Raises:
        ValueError: the in-plane axes are not perpendicular (DICOM cannot store a sheared plane).

    Example:
        >>> geometry = dicom_geometry(np.diag([-0.7, -0.8, 2.5, 1.0]), depth=2)
        >>> geometry["orientation"], geometry["pixel_spacing"], geometry["positions"][1]
        ([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.8, 0.7], [0.0, 0.0, 2.5])
    """
    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    column_step, row_step, slice_step = lps[:3, 0], lps[:3, 1], lps[:3, 2]  # along X (a row), Y, Z
    along_row, along_column = column_step / np.linalg.norm(column_step), row_step / np.linalg.norm(row_step)
    if abs(float(along_row @ along_column)) > 1e-4:
        raise ValueError(f"the affine's first two axes are not perpendicular, which DICOM cannot store: {affine}")
    return {
        "orientation": [_clean(v) for v in (*along_row, *along_column)],
        "pixel_spacing": [_clean(np.linalg.norm(row_step)), _clean(np.linalg.norm(column_step))],
        "slice_spacing": _clean(np.linalg.norm(slice_step)),
        "positions": [[_clean(v) for v in (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]] for k in range(depth)],
    }


def _clean(value: Any) -> float:
    """A float without rounding noise (DICOM decimal strings hold 16 characters)."""
    return float(np.round(float(value), 8)) + 0.0


def _plane_arguments(affine: Any, depth: int) -> dict[str, Any]:
    hd = _highdicom()
    geometry = dicom_geometry(affine, depth)
    spacing = geometry["slice_spacing"]
    return {
        "pixel_measures": hd.PixelMeasuresSequence(geometry["pixel_spacing"], spacing, spacing),
        "plane_orientation": hd.PlaneOrientationSequence("PATIENT", geometry["orientation"]),
        "plane_positions": [hd.PlanePositionSequence("PATIENT", p) for p in geometry["positions"]],
    }


def _frames(volume: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` -> frames ``(Z, Y, X)``: frame k, row j, column i."""
    return np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))


def _spatial(data: Any, what: str) -> np.ndarray:
    array = np.asarray(data.detach().cpu().numpy() if hasattr(data, "detach") else data)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"DICOM output: {what} must be a 3D volume (X, Y, Z), got shape {array.shape}")
    return array


def _save(dataset: Any, path: str | os.PathLike, description: str) -> str:
    dataset.SeriesDescription = description[:64]
    with atomic_output(path, suffix=".dcm") as tmp:
        dataset.save_as(tmp)
    return os.fspath(path)


def write_parametric_map(
    cam: Any, affine: Any, source: Sequence[Any], path: str | os.PathLike, description: str = "Seg-CAM",
    series_number: int = 900,
) -> str:  # fmt: skip
    """Write a map ``(X, Y, Z)`` (or ``(1, X, Y, Z)``) as a DICOM Parametric Map, atomically; returns the path.

    The values are stored as 32-bit floats with a real-world value mapping of slope 1 and intercept 0 (unit "1",
    no units): a viewer reads the raw map values. Study, patient and frame of reference are those of ``source``.

    Args:
        cam: the map.
        affine: its voxel-to-world (RAS) affine.
        source: the source series' datasets (:py:func:`dicom_series`).
        path: destination ``.dcm`` file.
        description: the series description (and the mapping's explanation), e.g. ``"hirescam pre_head class 1"``.
        series_number: the new series' number.

    Example:
        .. code-block:: python

            write_parametric_map(cam, image.affine, dicom_series("ct_series/"), "out/case_cam.dcm")
    """
    hd = _highdicom()
    from pydicom.sr.coding import Code

    volume = _spatial(cam, "the map").astype(np.float32)
    low, high = (float(volume.min()), float(volume.max())) if volume.size else (0.0, 0.0)
    mapping = hd.pm.RealWorldValueMapping("segcam", description[:64], Code("1", "UCUM", "no units"), (low, high),
                                          slope=1.0, intercept=0.0)  # fmt: skip
    window = hd.VOILUTTransformation(window_center=(low + high) / 2, window_width=max(high - low, 1e-6))
    dataset = hd.pm.ParametricMap(
        source, _frames(volume), hd.UID(), series_number, hd.UID(), 1, **_equipment(),
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping], content_label="SEGCAM",
        content_description=description[:64], voi_lut_transformations=[window],
        **_plane_arguments(affine, volume.shape[2]),
    )  # fmt: skip
    return _save(dataset, path, description)


def write_dicom_seg(
    segmentation: Any, affine: Any, source: Sequence[Any], path: str | os.PathLike,
    class_names: Mapping[int, str] | None = None, series_number: int = 901,
) -> str:  # fmt: skip
    """Write a segmentation as DICOM SEG (binary segments), atomically; returns the path.

    A label map ``(X, Y, Z)`` gives segment ``c`` for label ``c`` (``1 .. max``); per class masks ``(C, X, Y, Z)``
    (multi-label) give segment ``c + 1`` for channel ``c``. Segments are named by ``class_names``.

    Example:
        .. code-block:: python

            write_dicom_seg(label_map, image.affine, dicom_series("ct_series/"), "out/case_seg.dcm", {1: "spleen"})
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    seg = np.asarray(segmentation)
    names = dict(class_names or {})
    if seg.ndim == 4:  # multi-label masks: channel c is segment c + 1
        pixels = np.stack([_frames(mask > 0) for mask in seg], axis=-1).astype(np.uint8)
        labels = {c + 1: names.get(c) or f"class {c}" for c in range(seg.shape[0])}
    else:
        volume = _spatial(seg, "the segmentation").astype(np.int64)
        pixels = _frames(volume).astype(np.uint16 if volume.max(initial=0) > 255 else np.uint8)
        labels = {c: names.get(c) or f"class {c}" for c in range(1, max(1, int(volume.max(initial=0))) + 1)}
    version = _equipment()["software_versions"]
    algorithm = hd.AlgorithmIdentificationSequence("monai_segcam", codes.cid7162.ArtificialIntelligence, version)
    segments = [
        hd.seg.SegmentDescription(number, label[:64], codes.SCT.Tissue, codes.SCT.Tissue, "AUTOMATIC", algorithm)
        for number, label in labels.items()
    ]
    dataset = hd.seg.Segmentation(
        source, pixels, "BINARY", segments, hd.UID(), series_number, hd.UID(), 1, **_equipment(),
        omit_empty_frames=False, **_plane_arguments(affine, pixels.shape[0]),
    )  # fmt: skip
    return _save(dataset, path, "segmentation")


def write_dicom_series(
    image: Any, folder: str | os.PathLike, affine: Any = None, patient: str = "segcam", modality: str = "CT",
) -> list[str]:  # fmt: skip
    """Write a volume ``(X, Y, Z)`` (or ``(1, X, Y, Z)``) as a DICOM series, one file per slice ``image[:, :, k]``,
    with the geometry of its voxel-to-world (RAS) affine (:py:func:`dicom_geometry`), e.g. to try DICOM output on a
    NIfTI file. Values are stored as 16-bit integers with a rescale slope and intercept (integers in the int16 range
    exactly); returns the files, atomically written.

    Example:
        .. code-block:: python

            write_dicom_series(LoadImage(image_only=True)("ct.nii.gz"), "ct_series")  # a MetaTensor: its affine
    """
    _highdicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    volume = _spatial(image, "the image").astype(np.float64)
    affine = _affine_or_meta(image, affine)
    geometry = dicom_geometry(affine, volume.shape[2])
    pixels, slope, intercept = _stored(volume)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k, plane in enumerate(_frames(pixels)):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, patient, "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", "1", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.ImageType = modality, 1, k + 1, ["DERIVED", "SECONDARY"]
        ds.ImageOrientationPatient, ds.ImagePositionPatient = geometry["orientation"], geometry["positions"][k]
        ds.PixelSpacing, ds.SliceThickness = geometry["pixel_spacing"], geometry["slice_spacing"]
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        path = os.path.join(os.fspath(folder), f"slice{k + 1:04d}.dcm")
        with atomic_output(path, suffix=".dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def _affine_or_meta(image: Any, affine: Any) -> np.ndarray:
    if affine is None:
        affine = getattr(image, "affine", None)
    if affine is None:
        raise ValueError("write_dicom_series needs the volume's geometry: give `affine=` (or a MetaTensor)")
    return np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)


def _stored(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """16-bit stored values and the rescale slope and intercept giving ``volume`` back."""
    low, high = float(volume.min(initial=0.0)), float(volume.max(initial=0.0))
    if np.array_equal(volume, np.round(volume)) and low >= -32768 and high <= 32767:
        return volume.astype(np.int16), 1.0, 0.0
    slope = (high - low) / 65535 if high > low else 1.0
    return np.round((volume - low) / slope).astype(np.uint16), slope, low
