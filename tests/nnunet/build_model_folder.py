# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Build a tiny trained nnU-Net v2 model folder with nnU-Net's own API, from a synthetic two-channel data set.

Run as a script (``python build_model_folder.py ROOT``) in a fresh process: nnU-Net reads ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` from the environment when it is first imported, so this sets them to
folders under ``ROOT`` before importing it. Steps, all nnU-Net's: fingerprint extraction, experiment planning
(``3d_fullres``), the plans shrunk to a 16^3 patch and a three-stage network with 4-16 features, preprocessing, and
a few training iterations of ``nnUNetTrainer`` per fold (its checkpoint format, ``checkpoint_final.pth``). Nothing is
downloaded. Prints the model folder's path. The options make a bigger model for the benchmark
(``benchmarks/bench_nnunet.py``); the tests use the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import random

import numpy as np

DATASET = "Dataset042_SegCAMTiny"
NUM_CASES = 6


def synthetic_case(
    rng: np.random.Generator, shape: tuple[int, int, int], radius_range: tuple[float, float] = (3.5, 5.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Two channels (a bright ball on noise, and its edge contrast) and the ball's label, arrays in (z, y, x)."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    centre = np.array([rng.uniform(0.35, 0.65) * s for s in shape], dtype=np.float32)
    radius = rng.uniform(*radius_range)
    distance = np.linalg.norm(grid - centre, axis=-1)
    label = (distance < radius).astype(np.uint8)
    image0 = 100.0 + 20.0 * rng.standard_normal(shape) + 200.0 * label
    image1 = 50.0 + 10.0 * rng.standard_normal(shape) + 80.0 * np.exp(-((distance - radius) ** 2) / 2.0)
    return np.stack([image0, image1]).astype(np.float32), label


def write_raw_dataset(raw: str, base_shape: tuple[int, int, int]) -> None:
    import SimpleITK as sitk

    folder = os.path.join(raw, DATASET)
    os.makedirs(os.path.join(folder, "imagesTr"), exist_ok=True)
    os.makedirs(os.path.join(folder, "labelsTr"), exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(NUM_CASES):
        shape = (base_shape[0] + i % 3, base_shape[1] + i % 2, base_shape[2])
        images, label = synthetic_case(rng, shape, (0.2 * min(shape), 0.3 * min(shape)))
        for c, image in enumerate(images):
            itk = sitk.GetImageFromArray(image)
            itk.SetSpacing((1.0, 1.0, 1.5))
            sitk.WriteImage(itk, os.path.join(folder, "imagesTr", f"case_{i:03d}_{c:04d}.nii.gz"))
        itk = sitk.GetImageFromArray(label)
        itk.SetSpacing((1.0, 1.0, 1.5))
        sitk.WriteImage(itk, os.path.join(folder, "labelsTr", f"case_{i:03d}.nii.gz"))
    dataset = {
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "ball": 1},
        "numTraining": NUM_CASES,
        "file_ending": ".nii.gz",
    }
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset, f, indent=2)


def shrink_plans(preprocessed: str, patch: int, features: list[int]) -> None:
    """A cubic patch and a PlainConvUNet with one stage per entry of ``features`` (nnU-Net's plans format)."""
    path = os.path.join(preprocessed, DATASET, "nnUNetPlans.json")
    with open(path) as f:
        plans = json.load(f)
    config = plans["configurations"]["3d_fullres"]
    config["patch_size"] = [patch] * 3
    config["batch_size"] = 2
    n = len(features)
    config["architecture"]["arch_kwargs"].update(
        n_stages=n,
        features_per_stage=list(features),
        kernel_sizes=[[3, 3, 3]] * n,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        n_conv_per_stage=[2] * n,
        n_conv_per_stage_decoder=[2] * (n - 1),
    )
    with open(path, "w") as f:
        json.dump(plans, f, indent=2)


def main(root: str, shape=(16, 22, 20), patch=16, features=(4, 8, 16), folds=(0, 1), iterations=20) -> str:
    paths = {name: os.path.join(root, name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, path in paths.items():
        os.makedirs(path, exist_ok=True)
        os.environ[name] = path
    os.environ["nnUNet_n_proc_DA"] = "1"  # the planner sets torch threads to it
    os.environ["nnUNet_compile"] = "false"
    write_raw_dataset(paths["nnUNet_raw"], tuple(shape))

    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.run.run_training import get_trainer_from_args

    torch.manual_seed(0)
    dataset_id = int(DATASET[7:10])
    extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=True, verbose=False)
    plan_experiments([dataset_id])
    shrink_plans(paths["nnUNet_preprocessed"], patch, list(features))
    preprocess([dataset_id], configurations=("3d_fullres",), num_processes=(1,), verbose=False)

    os.environ["nnUNet_n_proc_DA"] = "0"  # data augmentation in this process, from numpy's and Python's seeded RNGs
    for fold in folds:
        random.seed(fold)
        np.random.seed(fold)
        trainer = get_trainer_from_args(DATASET, "3d_fullres", fold, device=torch.device("cpu"))
        trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 1, iterations, 1
        trainer.run_training()
    folder = os.path.join(paths["nnUNet_results"], DATASET, "nnUNetTrainer__nnUNetPlans__3d_fullres")
    print(folder)
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", help="folder for nnUNet_raw, nnUNet_preprocessed and nnUNet_results")
    parser.add_argument("--shape", nargs=3, type=int, default=[16, 22, 20], help="training image shape (z, y, x)")
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--features", nargs="+", type=int, default=[4, 8, 16], help="features per stage")
    parser.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--iterations", type=int, default=20, help="training iterations per fold")
    args = parser.parse_args()
    main(args.root, args.shape, args.patch, args.features, args.folds, args.iterations)
