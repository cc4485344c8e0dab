# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Every name an output gets: file-name-safe tokens and case names, CAM file names, and the output keys of CAMs."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from monai.utils import ensure_tuple

from ..explainers import ExplainRequest

__all__ = [
    "safe_token",
    "safe_case_name",
    "CaseNamer",
    "cam_file_name",
    "panel_file_name",
    "segmentation_file_name",
    "summary_file_name",
    "channel_table_file_name",
    "structures_file_name",
    "STATS_CSV",
    "STRUCTURES_CSV",
    "epoch_folder",
    "source_meta",
    "cam_output_keys",
    "cam_keys",
]

STATS_CSV = "segcam_stats.csv"
"""The statistics table's file name in an output folder (the handlers', the command line's)."""
STRUCTURES_CSV = "segcam_structures.csv"
"""The data set's structure table's file name in an output folder (the handlers', the command line's)."""

_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".gz", ".npy", ".npz", ".png")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_token(text: object, default: str = "x", max_length: int = 100) -> str:
    """``text`` as a file-name-safe token: runs of characters outside ``[A-Za-z0-9._-]`` become ``_``, no leading dots.

    Example:
        .. code-block:: python

            safe_token("decoder.0[seg]")  # 'decoder.0_seg'
    """
    token = _UNSAFE.sub("_", str(text)).lstrip(".")[:max_length].strip("_")
    return token if token else default


def safe_case_name(
    source: Mapping[str, Any] | str | os.PathLike | None, default: str = "case", max_length: int = 100
) -> str:
    """A file-name-safe case identifier from a case's metadata or source path.

    The base name of ``filename_or_obj`` (a DICOM series folder gives the folder's name) without its image
    extension, with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``_``, no leading dots, at most
    ``max_length`` characters. The result never contains a path separator and is never ``"."`` or ``".."``.

    Args:
        source: a metadata dict (``MetaTensor.meta``, with ``filename_or_obj``), a path, or ``None``.
        default: the name when there is no usable source name.
        max_length: the longest name returned.

    Example:
        .. code-block:: python

            safe_case_name({"filename_or_obj": "/data/imagesTs/spleen 12.nii.gz"})  # 'spleen_12'
            safe_case_name("../../etc/passwd")  # 'passwd'
    """
    if isinstance(source, Mapping):
        source = source.get("filename_or_obj")
    if isinstance(source, (list, tuple)):  # a series given as its files
        source = os.path.dirname(os.fspath(source[0])) if source else None
    name = os.path.basename(os.path.normpath(os.fspath(source))) if isinstance(source, (str, os.PathLike)) else ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    lower = name.lower()
    for suffix in _KNOWN_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return safe_token(name, default, max_length)


class CaseNamer:
    """Case names unique within a run (or an epoch: :py:meth:`reset`): :py:func:`safe_case_name` of each source,
    and when two different sources share that name, the later one gets ``_`` and 8 hex digits of its path's hash.
    The handlers and the command line name cases with it, so one input gets one name by every front door.

    Example:
        .. code-block:: python

            namer = CaseNamer()
            namer("/a/ct 1.nii.gz"), namer("/b/ct 1.nii.gz")  # ('ct_1', 'ct_1_1c3e...')
    """

    def __init__(self) -> None:
        self._sources: dict[str, str] = {}

    def reset(self) -> None:
        """Forget the names given so far."""
        self._sources.clear()

    def __call__(self, source: Mapping[str, Any] | str | os.PathLike | None, default: str = "case") -> str:
        """The name of ``source`` (metadata with ``filename_or_obj``, or a path); ``default`` without a source."""
        name = safe_case_name(source, default=default)
        origin = source.get("filename_or_obj") if isinstance(source, Mapping) else source
        origin = str(origin) if origin else default
        if self._sources.setdefault(name, origin) != origin:
            name = f"{name}_{hashlib.sha1(origin.encode()).hexdigest()[:8]}"
            self._sources.setdefault(name, origin)
        return name


def cam_file_name(case: str, method: str, layer: str, class_index: int, extension: str = ".nii.gz") -> str:
    """The file name of one CAM: ``{case}_cam_{method}_{layer}_class{c}{extension}``, layer and method through
    :py:func:`safe_token` (so ``encoder.0`` stays ``encoder.0``). Every front door names its files with it.

    Example:
        .. code-block:: python

            cam_file_name("spleen_12", "hirescam", "decoder.0", 1)  # 'spleen_12_cam_hirescam_decoder.0_class1.nii.gz'
    """
    return f"{case}_cam_{safe_token(method)}_{safe_token(layer)}_class{int(class_index)}{extension}"


def panel_file_name(case: str, class_index: int) -> str:
    """The file name of a case's panel of maps (layers x methods) of one class: ``{case}_cam_class{c}_panel.png``.

    Example:
        .. code-block:: python

            panel_file_name("spleen_12", 1)  # 'spleen_12_cam_class1_panel.png'
    """
    return f"{case}_cam_class{int(class_index)}_panel.png"


def segmentation_file_name(case: str, extension: str = ".nii.gz") -> str:
    """The file name of a case's segmentation: ``{case}_seg.nii.gz`` (``{case}_seg.dcm`` as DICOM SEG).

    Example:
        .. code-block:: python

            segmentation_file_name("spleen_12")  # 'spleen_12_seg.nii.gz'
    """
    return f"{case}_seg{extension}"


def summary_file_name(case: str) -> str:
    """The file name of a case's JSON summary: ``{case}_segcam.json``.

    Example:
        .. code-block:: python

            summary_file_name("spleen_12")  # 'spleen_12_segcam.json'
    """
    return f"{case}_segcam.json"


def channel_table_file_name(case: str) -> str:
    """The file name of a case's input-channel table: ``{case}_channels.csv``.

    Example:
        .. code-block:: python

            channel_table_file_name("brats_1")  # 'brats_1_channels.csv'
    """
    return f"{case}_channels.csv"


def structures_file_name(case: str) -> str:
    """The file name of a case's structure table: ``{case}_structures.csv``.

    Example:
        .. code-block:: python

            structures_file_name("case1")  # 'case1_structures.csv'
    """
    return f"{case}_structures.csv"


def epoch_folder(output_dir: str | os.PathLike, epoch: int, epoch_subdir: bool = True) -> str:
    """The folder of an epoch's outputs: ``output_dir/epoch_NNNN`` with ``epoch_subdir``, else ``output_dir``.

    Example:
        .. code-block:: python

            epoch_folder("cams", 2)  # 'cams/epoch_0002'
    """
    return os.path.join(output_dir, f"epoch_{epoch:04d}") if epoch_subdir else os.fspath(output_dir)


def source_meta(
    item: Any, batch: Any = None, index: int = 0, skip: Sequence[str | None] = ()
) -> tuple[str | None, Mapping[str, Any]]:
    """The metadata that names a case: ``item``'s own when it has a source file (``filename_or_obj``), else that of
    the first key of the collated ``batch`` loaded from a file (not in ``skip``, e.g. the label), with that key; the
    first loaded image names the case as a bundle's ``SaveImaged`` names its outputs when the network input is not
    a loaded image (several loaded phases concatenated).

    Example:
        .. code-block:: python

            key, meta = source_meta(batch["image"][0], batch, 0, skip=["label"])  # ('artery', {...}) or (None, ...)
    """
    meta = getattr(item, "meta", None) or {}
    if meta.get("filename_or_obj"):
        return None, meta
    for key, value in batch.items() if isinstance(batch, Mapping) else ():
        if key not in skip and getattr(value, "is_batch", False) and index < len(value) and value[index].meta.get(
            "filename_or_obj"
        ):
            return str(key), value[index].meta
    return None, meta


def cam_output_keys(cam_key: str, layers: str | Sequence[str]) -> dict[str, str]:
    """The output key of each layer's CAM: ``cam_key`` when ``layers`` is one name (a string), else
    ``f"{cam_key}_{layer}"`` per layer. The handlers, :py:class:`~monai_segcam.transforms.SegCAMd` and the bundle
    configs (through :py:func:`cam_keys`) all follow it.

    Example:
        .. code-block:: python

            cam_output_keys("cam", "pre_head")  # {"pre_head": "cam"}
            cam_output_keys("cam", ["bottleneck", "pre_head"])  # {"bottleneck": "cam_bottleneck", ...}
    """
    if isinstance(layers, str):
        return {layers: cam_key}
    return {str(layer): f"{cam_key}_{layer}" for layer in ensure_tuple(layers)}


def cam_keys(cam_key: str, layers: str | Sequence[str], method: str | None = None) -> list[str]:
    """The output keys of :py:func:`cam_output_keys` as a list, e.g. for ``Invertd``/``SaveImaged`` in a config:
    ``"keys": "$monai_segcam.outputs.cam_keys(@cam_key, @cam_layers, @cam_method)"``; with ``method``, for the keys
    its explainer's result has (occlusion's one map of the input whatever the layers).

    Example:
        .. code-block:: python

            cam_keys("cam", ["bottleneck", "pre_head"])  # ['cam_bottleneck', 'cam_pre_head']
            cam_keys("cam", ["bottleneck", "pre_head"], "occlusion")  # ['cam']
    """
    if method is not None:
        layers = ExplainRequest(method=method, layers=layers if isinstance(layers, str) else tuple(layers)).result_layers
    return list(cam_output_keys(cam_key, layers).values())
