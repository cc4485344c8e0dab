# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Explanation-quality metrics for volumetric CAMs: localisation, perturbation curves, randomisation checks."""

from __future__ import annotations

from .localization import pointing_game, relevance_mass, topk_iou
from .perturbation import (
    PerturbationBaseline,
    PerturbationCurve,
    PerturbationMode,
    auc,
    gaussian_blur,
    perturbation_curve,
    region_score_fn,
)
from .randomization import (
    LayerOrder,
    RandomizationStep,
    cascading_randomization,
    pearson_correlation,
    spearman_rank_correlation,
)
from .statistics import STAT_COLUMNS, cam_statistics, label_masks

__all__ = [
    "relevance_mass",
    "pointing_game",
    "topk_iou",
    "STAT_COLUMNS",
    "cam_statistics",
    "label_masks",
    "PerturbationMode",
    "PerturbationBaseline",
    "PerturbationCurve",
    "gaussian_blur",
    "region_score_fn",
    "perturbation_curve",
    "auc",
    "LayerOrder",
    "RandomizationStep",
    "pearson_correlation",
    "spearman_rank_correlation",
    "cascading_randomization",
]
