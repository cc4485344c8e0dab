# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Image files in, maps on each file's own grid out: reading (:py:func:`read_image`), placing file voxels on the
network grid (:py:func:`place_region`) and the MONAI pipeline (:py:class:`FileSegCAM`) behind
``monai-segcam explain``. What is written: :py:func:`~monai_segcam.outputs.write_case_folder`.

Example:
    .. code-block:: python

        from monai_segcam.files import FileSegCAM

        case = FileSegCAM(model, {"hirescam": engine})("ct.nii.gz", classes=[1])
"""

from __future__ import annotations

from .explainer import FileSegCAM
from .grids import place_region, voxels_to_grid
from .reading import file_affine, read_image

__all__ = ["FileSegCAM", "file_affine", "place_region", "read_image", "voxels_to_grid"]
