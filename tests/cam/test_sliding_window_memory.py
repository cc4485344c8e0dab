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
    size = int(sys.argv[1])
    torch.manual_seed(0)
    net = UNet(3, 1, 3, (8, 16, 32), (2, 2), num_res_units=1).eval()
    cam = SlidingWindowSegCAM(net, roi_size=32, layers=["pre_head", "bottleneck"], method="hirescam", overlap=0.25)
    def peak_kib():  # VmHWM: ru_maxrss would include the parent's high-water mark inherited through fork
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    cam(torch.randn(1, 1, 32, 32, 32), classes=[1, 2], region="all")  # warm-up: kernels, allocator pools
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the high-water mark to the current RSS
    before = peak_kib()
    cam(torch.randn(1, 1, size, size, size), classes=[1, 2], region="pred")
    print(json.dumps({"growth_mib": (peak_kib() - before) / 1024}))
    """
)


def peak_growth_mib(size: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(size)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_mib"]


@pytest.mark.slow
def test_peak_memory_grows_by_the_output_buffers_only():
    small, large = peak_growth_mib(64), peak_growth_mib(128)
    # volume-sized float32 buffers per voxel: image, stitched logits (3), region weights (2), count map, two maps of
    # 2 classes, plus transient masks: about 16 floats. Windows (and their activations) do not grow with the volume.
    voxels_added = 128**3 - 64**3
    buffers_mib = 16 * 4 * voxels_added / 2**20
    assert large - small <= 1.5 * buffers_mib + 32, (small, large, buffers_mib)
