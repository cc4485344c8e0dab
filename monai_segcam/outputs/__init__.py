# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The one output layer of every front door (handlers, transforms, command line): names (:py:mod:`.names`), atomic
files (:py:mod:`.files`), the writer of NIfTI maps and PNG views (:py:mod:`.writer`), DICOM Parametric Maps and SEG
(:py:mod:`.dicom`), 3D Slicer scenes (:py:mod:`.slicer`), the statistics table (:py:mod:`.table`), the structure tables
(:py:mod:`.structures`) and the folder of one explained image file
(:py:mod:`.case_folder`). The statistics themselves are :py:func:`monai_segcam.metrics.cam_statistics`."""

from __future__ import annotations

from . import case_folder, dicom, files, geometry, names, slicer, structures, table, writer
from .case_folder import *  # noqa: F403
from .dicom import *  # noqa: F403
from .files import *  # noqa: F403 (the public names of each module, listed once: in its __all__)
from .geometry import *  # noqa: F403
from .names import *  # noqa: F403
from .slicer import *  # noqa: F403
from .structures import *  # noqa: F403
from .table import *  # noqa: F403
from .writer import *  # noqa: F403

__all__ = [*names.__all__, *files.__all__, *geometry.__all__, *dicom.__all__, *slicer.__all__, *writer.__all__,
           *table.__all__, *structures.__all__, *case_folder.__all__]
