# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The bundle's own transform, in the style of model-zoo's renalStructures_CECT_segmentation: several loaded CT
phases concatenated into one network input that is a plain array, without metadata."""

from __future__ import annotations

import numpy as np
from monai.transforms import InvertibleTransform, MapTransform


class ConcatPhasesd(MapTransform, InvertibleTransform):
    """``data[key_out] = concatenate(data[k] for k in keys)`` along channels, as a NumPy array (no metadata)."""

    def __init__(self, keys, key_out: str = "image") -> None:
        super().__init__(keys)
        self.key_out = key_out

    def __call__(self, data):
        d = dict(data)
        d[self.key_out] = np.concatenate([np.asarray(d[key]) for key in self.keys])
        return d

    def inverse(self, data):
        return data
