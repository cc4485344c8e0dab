# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Peak memory of a sliding-window CAM grows with the volume only by the volume-sized buffers, not the activations."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent(
    """
    import json, sys, torch
    from monai.networks.nets import UNet
    from monai_segcam import SlidingWindowSegCAM
    torch.set_num_threads(2)
    shape, roi, budget = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    net = UNet(3, 1, 3, (4, 8, 16), (2, 2), num_res_units=1).eval() if roi > 32 else UNet(
        3, 1, 3, (8, 16, 32), (2, 2), num_res_units=1).eval()
    layers = ["pre_head"] if roi > 32 else ["pre_head", "bottleneck"]
    cam = SlidingWindowSegCAM(net, roi_size=roi, layers=layers, method="hirescam", overlap=0.25, device="cpu",
                              activation_budget=budget)
    def peak_kib():  # VmHWM: ru_maxrss would include the parent's high-water mark inherited through fork
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    cam(torch.randn(1, 1, roi, roi, roi), classes=[1, 2], region="all")  # warm-up: kernels, allocator pools
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the high-water mark to the current RSS
    before = peak_kib()
    image = torch.randn(1, 1, *shape)
    start = peak_kib()
    cam(image, classes=[0, 1, 2] if roi > 32 else [1, 2], region="pred")
    print(json.dumps({"growth_mib": (peak_kib() - start) / 1024, "image_mib": (start - before) / 1024}))
    """
)


BUDGET = 64 << 20  # activation_budget: windows kept from the prediction pass for the CAM


def peak_growth_mib(shape, roi: int = 32, budget: int = BUDGET) -> float:
    args = [json.dumps(list(shape)), str(roi), str(budget)]
    out = subprocess.run([sys.executable, "-c", CHILD, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_mib"]


@pytest.mark.slow
def test_peak_memory_grows_by_the_output_buffers_only():
    small, large = peak_growth_mib((64,) * 3), peak_growth_mib((128,) * 3)
    # volume-sized float32 buffers per voxel: image, stitched logits (3), region weights (2), count map, two maps of
    # 2 classes, plus transient masks: about 16 floats. Windows kept for the CAM stay within activation_budget;
    # other window activations do not grow with the volume.
    voxels_added = 128**3 - 64**3
    buffers_mib = 16 * 4 * voxels_added / 2**20
    assert large - small <= 1.5 * buffers_mib + BUDGET / 2**20 + 32, (small, large, buffers_mib)


@pytest.mark.slow
def test_huge_volume_stays_within_the_documented_bound():
    """512x512x400 with a tiny network and 3 classes, volume buffers on the CPU: the peak above the loaded image is
    at most 16 float32 values per voxel plus the activation budget (the bound documented in the README)."""
    shape = (512, 512, 400)
    voxels = 512 * 512 * 400
    growth = peak_growth_mib(shape, roi=128)
    bound = 16 * 4 * voxels / 2**20 + BUDGET / 2**20
    print(f"huge volume {shape}: peak growth {growth:.0f} MiB (bound {bound:.0f} MiB)")
    assert growth <= bound, (growth, bound)
