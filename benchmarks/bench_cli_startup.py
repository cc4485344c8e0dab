# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Start-up of the command line: ``python -m monai_segcam --help``, ``explain --help`` and an argument error, against
importing what a command runs on (``import monai_segcam.cam``: torch and MONAI), each in a fresh interpreter.

Run: ``python benchmarks/bench_cli_startup.py`` (``--repeats N``, median of N; default 3).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {
    "monai-segcam --help": ["-m", "monai_segcam", "--help"],
    "monai-segcam explain --help": ["-m", "monai_segcam", "explain", "--help"],
    "monai-segcam explain (argument error: no --output)": ["-m", "monai_segcam", "explain", "ct.nii.gz", "--bundle", "b"],
    "import monai_segcam.cam (torch and MONAI)": ["-c", "import monai_segcam.cam"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": ROOT}
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):  # round-robin, so that load affects every command alike
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True)
            samples[name].append(time.perf_counter() - start)
    print("| command | time (s) |\n|---|---|")
    for name, values in samples.items():
        print(f"| {name} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()
