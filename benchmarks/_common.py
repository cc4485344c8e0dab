# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Timing and peak-memory helpers shared by the benchmarks (not part of the package)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def median_times(tools: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median wall time per tool, timed round-robin in one process so that load affects all tools alike."""
    for fn in tools.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(repeats):
        for name, fn in tools.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def reset_peak_rss() -> None:
    """Reset this process's peak-RSS mark (Linux). A child started from a big parent inherits the parent's high-water
    mark through fork, so ``ru_maxrss`` alone would report the parent's size."""
    with open("/proc/self/clear_refs", "w") as stream:
        stream.write("5")


def peak_rss_mib() -> float:
    """Peak resident memory of this process since the last :py:func:`reset_peak_rss`, in MiB (``VmHWM``)."""
    with open("/proc/self/status") as stream:
        return next(int(line.split()[1]) for line in stream if line.startswith("VmHWM")) / 1024


def peak_rss_in_subprocess(script: str, *args: str) -> float:
    """Run ``script --memory-child args...`` in a fresh interpreter and return the peak RSS it reports."""
    out = subprocess.run([sys.executable, script, "--memory-child", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def report_child_peak() -> None:
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))
