# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The command line answers ``--help`` and argument errors without importing torch or MONAI; the package imports its
subpackages when a name is first used."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m monai_segcam ARGS`` and the top-level modules it imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "monai_segcam", *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", result.stderr, flags=re.M)
    assert "argparse" in names, "importtime output not understood"  # the parse below sees the imports
    return result, {name.split(".")[0] for name in names}


@pytest.mark.parametrize(
    "args, status, expected",
    [
        (["--help"], 0, "explain"),
        (["explain", "--help"], 0, "--classes"),
        (["layers", "--help"], 0, "--input-shape"),
        (["explain", "ct.nii.gz", "--bundle", "b", "--output", "o", "--method", "gradcm"], 2, "invalid choice: 'gradcm'"),
        (["explain", "ct.nii.gz", "--bundle", "b"], 2, "the following arguments are required: --output"),
        (["explain", "ct.nii.gz", "--output", "o", "--bundle", "b", "--classes", "one"], 2, "invalid class 'one'"),
        (["layers"], 2, "one of the arguments --bundle --network --nnunet is required"),
    ],
)
def test_help_and_argument_errors_import_neither_torch_nor_monai(args, status, expected):
    result, modules = imported_modules(*args)
    assert result.returncode == status, result.stderr[-2000:]
    assert expected in result.stdout + result.stderr
    assert not {"torch", "monai", "numpy"} & modules, sorted({"torch", "monai", "numpy"} & modules)


def test_a_malformed_region_is_still_a_usage_error():
    result, modules = imported_modules("explain", "ct.nii.gz", "--bundle", "b", "--output", "o", "--region", "box:1")
    assert result.returncode == 2 and "argument --region: unknown region 'box:1'" in result.stderr
    assert "torch" in modules  # the region grammar is the engines': checked after every other argument


def test_the_method_choices_are_the_registry():
    """The CLI's list of built-in methods is the package's own registrations (other tests may register more)."""
    from monai_segcam.cam.methods import registered_rule
    from monai_segcam.cli.main import ENTRY_POINT_GROUP, METHODS
    from monai_segcam.explainers import CAM_KIND, explainer_kind, explainer_methods
    from monai_segcam.explainers import ENTRY_POINT_GROUP as GROUP

    def own(name: str) -> bool:
        kind = explainer_kind(name)
        source = registered_rule(name) if kind.name == CAM_KIND else kind.build
        return source.__module__.startswith("monai_segcam.")

    assert list(METHODS) == [m for m in explainer_methods() if own(m)], "register the name in monai_segcam/cli/main.py"
    assert ENTRY_POINT_GROUP == GROUP


def test_every_exported_name_imports_on_first_use():
    script = (
        "import sys, monai_segcam as m\n"
        "assert 'torch' not in sys.modules\n"
        "from monai_segcam import SegCAM, SegCAMHandler\n"
        "assert m.cam.SegCAM is SegCAM and m.handlers.SegCAMHandler is SegCAMHandler\n"
        "assert all(getattr(m, name) is not None for name in m.__all__) and set(m.__all__) <= set(dir(m))\n"
        "try:\n    m.not_a_name\nexcept AttributeError as exc:\n    assert 'not_a_name' in str(exc)\n"
        "else:\n    raise AssertionError('no AttributeError')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]



def test_classes_all_is_parsed():
    from monai_segcam.cli.main import build_parser

    args = build_parser().parse_args(["explain", "ct.nii.gz", "--bundle", "b", "--output", "o", "--classes", "all"])
    assert args.classes == ["all"]
    args = build_parser().parse_args(["explain", "ct.nii.gz", "--bundle", "b", "--output", "o", "--classes", "1", "3"])
    assert args.classes == [1, 3]
