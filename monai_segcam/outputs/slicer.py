# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""A 3D Slicer scene of a case folder: ``<case>_colors.ctbl`` (the segmentation's classes, a Slicer colour table) and
``<case>_scene.mrml`` (an MRML scene: the input image as background, each NIfTI map as a colour foreground volume,
the segmentation as a label map with the colour table), written beside the NIfTI files they load. Open the scene with
File > Add Data (or drag it onto Slicer): the first map lies over the image in the three slice views; the others are
in the Volumes module and the slice views' foreground menu."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from ..visualize.colors import class_colors
from .writer import write_text

__all__ = ["write_color_table", "write_slicer_scene"]

_MAP_COLORS = "vtkMRMLColorTableNodeRainbow"  # a colour node every Slicer scene has
_IMAGE_COLORS = "vtkMRMLColorTableNodeGrey"


def write_color_table(path: str | os.PathLike, classes: Sequence[int], class_names: Mapping[int, str] | None = None) -> str:
    """Write a Slicer colour table (``.ctbl``: ``index name R G B A`` per line) of ``classes`` (with 0, the
    background), coloured by :py:func:`~monai_segcam.visualize.colors.class_colors` and named by ``class_names``
    (spaces become ``_``); returns the path.

    Example:
        .. code-block:: python

            write_color_table("out/case1/case1_colors.ctbl", [0, 1, 2], {1: "spleen", 2: "liver"})
    """
    names = dict(class_names or {})
    lines = ["# Color table file written by monai_segcam", f"# {len(set(classes) | {0})} values"]
    for c, rgba in class_colors(sorted(set(classes) | {0})).items():
        name = (names.get(c) or ("background" if c == 0 else f"class_{c}")).replace(" ", "_")
        lines.append(f"{c} {name} {' '.join(str(v) for v in rgba)}")
    return write_text("\n".join(lines) + "\n", path)


def write_slicer_scene(
    folder: str | os.PathLike, case: str, image: str, maps: Sequence[tuple[str, str, float]],
    segmentation: str | None, color_table: str, opacity: float = 0.5,
) -> str:  # fmt: skip
    """Write ``<folder>/<case>_scene.mrml``: ``image`` in grey, each map of ``maps`` ``(file, name, maximum)`` as a
    rainbow volume windowed ``[0, maximum]`` (the first one over the image at ``opacity``), and the label map
    ``segmentation`` (``None``: none, e.g. multi-label masks) coloured by the colour table ``color_table``; returns
    the path. Files are referred to relative to
    ``folder`` where they lie below it (a DICOM series folder by its first file).

    Example:
        .. code-block:: python

            write_slicer_scene("out/case1", "case1", "/data/case1.nii.gz",
                               [("case1_cam_hirescam_pre_head_class1.nii.gz", "hirescam pre_head class 1", 3.2)],
                               "case1_seg.nii.gz", "case1_colors.ctbl")
    """
    folder = os.fspath(folder)
    scene = ET.Element("MRML", version="Slicer4.4.0", userTags="")
    background = _volume(scene, "Volume", "image", _file(folder, image), _IMAGE_COLORS, auto_window=True)
    foreground = [_volume(scene, "Volume", name, _file(folder, f), _MAP_COLORS, (0.0, maximum))
                  for f, name, maximum in maps]  # fmt: skip
    ET.SubElement(scene, "ColorTableStorage", id="vtkMRMLColorTableStorageNode1", name="ColorTableStorage",
                  fileName=_file(folder, color_table))  # fmt: skip
    ET.SubElement(scene, "ColorTable", id="vtkMRMLColorTableNode1", name=f"{case} classes", type="13",
                  storageNodeRef="vtkMRMLColorTableStorageNode1", references="storage:vtkMRMLColorTableStorageNode1;")  # fmt: skip
    label = "" if segmentation is None else _volume(scene, "LabelMapVolume", "segmentation",
                                                    _file(folder, segmentation), "vtkMRMLColorTableNode1")  # fmt: skip
    ET.SubElement(scene, "Selection", id="vtkMRMLSelectionNodeSingleton", name="Selection", singletonTag="Singleton",
                  activeVolumeID=background, secondaryVolumeID=foreground[0] if foreground else "",
                  activeLabelVolumeID=label)  # fmt: skip
    for view in ("Red", "Yellow", "Green"):
        ET.SubElement(scene, "SliceComposite", id=f"vtkMRMLSliceCompositeNode{view}", name=f"SliceComposite{view}",
                      singletonTag=view, layoutName=view, backgroundVolumeID=background,
                      foregroundVolumeID=foreground[0] if foreground else "", foregroundOpacity=f"{opacity:g}",
                      labelVolumeID=label, labelOpacity="1")  # fmt: skip
    ET.indent(scene)
    path = os.path.join(folder, f"{case}_scene.mrml")
    return write_text(ET.tostring(scene, encoding="unicode") + "\n", path)


def _volume(
    scene: ET.Element, kind: str, name: str, file_name: str, colors: str, window: tuple[float, float] | None = None,
    auto_window: bool = False,
) -> str:  # fmt: skip
    """A volume node with its storage and display nodes; returns the volume's id."""
    n = sum(1 for node in scene if node.tag == kind) + 1
    prefix = "vtkMRMLLabelMapVolume" if kind == "LabelMapVolume" else "vtkMRMLScalarVolume"
    ids = {"volume": f"{prefix}Node{n}", "display": f"{prefix}DisplayNode{n}", "storage": f"{prefix}StorageNode{n}"}
    ET.SubElement(scene, "VolumeArchetypeStorage", id=ids["storage"], name=f"{name} storage", fileName=file_name,
                  useCompression="1")  # fmt: skip
    display = {"id": ids["display"], "name": f"{name} display", "colorNodeID": colors,
               "references": f"color:{colors};"}  # fmt: skip
    if window is not None:
        low, high = window
        high = high if high > low else low + 1.0
        display.update(autoWindowLevel="0", window=f"{high - low:.9g}", level=f"{(high + low) / 2:.9g}",
                       lowerThreshold=f"{low:.9g}", upperThreshold=f"{high:.9g}", applyThreshold="0")  # fmt: skip
    elif auto_window:
        display["autoWindowLevel"] = "1"
    ET.SubElement(scene, "LabelMapVolumeDisplay" if kind == "LabelMapVolume" else "VolumeDisplay", display)
    ET.SubElement(scene, kind, id=ids["volume"], name=name, displayNodeRef=ids["display"],
                  storageNodeRef=ids["storage"],
                  references=f"display:{ids['display']};storage:{ids['storage']};")  # fmt: skip
    return ids["volume"]


def _file(folder: str, path: str) -> str:
    """``path`` relative to ``folder`` when it lies below it (else absolute); a DICOM folder as its first file."""
    full = path if os.path.isabs(path) else os.path.join(folder, path)
    if os.path.isdir(full):
        files = sorted(f for f in os.listdir(full) if os.path.isfile(os.path.join(full, f)))
        full = os.path.join(full, files[0]) if files else full
    relative = os.path.relpath(os.path.abspath(full), os.path.abspath(folder))
    return relative if not relative.startswith("..") else os.path.abspath(full)

