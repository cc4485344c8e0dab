# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Regenerate the bundle's ``sample_data/``: three phantoms with seeds disjoint from the training set.

Run from anywhere: ``python bundles/segcam_demo/scripts/make_sample_data.py``.
"""

from __future__ import annotations

import os

from monai_segcam.data import write_phantom_dataset

SAMPLE_SEED = 1000  # train.json uses seeds data_seed .. data_seed + num_train + num_val - 1 (0 .. 19 by default)
NUM_SAMPLES = 3

if __name__ == "__main__":
    out_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sample_data")
    for item in write_phantom_dataset(out_dir, num=NUM_SAMPLES, seed=SAMPLE_SEED, overwrite=True):
        print(item["image"], item["label"])
