# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Pictures of 3D CAMs: orthogonal slices, layer x class panels, PNG files, TensorBoard images and notebook views
(:py:func:`show`).

matplotlib is optional (``pip install matplotlib``): it is only needed when a figure is built.
"""

from __future__ import annotations

from monai_segcam.visualize.colors import class_colors
from monai_segcam.visualize.figures import figure_to_array, save_figure
from monai_segcam.visualize.notebook import niivue_view, show
from monai_segcam.visualize.overlay import draw_overlay
from monai_segcam.visualize.panels import plot_cam_panel
from monai_segcam.visualize.planes import extract_plane, find_center
from monai_segcam.visualize.slices import plot_orthogonal_slices
from monai_segcam.visualize.tensorboard import log_cam_to_tensorboard

__all__ = [
    "class_colors",
    "draw_overlay",
    "extract_plane",
    "figure_to_array",
    "find_center",
    "log_cam_to_tensorboard",
    "niivue_view",
    "plot_cam_panel",
    "plot_orthogonal_slices",
    "save_figure",
    "show",
]
