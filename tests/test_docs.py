# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The documentation works: README Python examples run, the API page is current, public names are documented."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
from make_api import public_objects, render  # noqa: E402


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("doc", ["README.md", "docs/tutorial.md"])
def test_python_examples_run(doc, tmp_path):
    """Every ```python block of the page runs, in order, from the repository root (like a reader would)."""
    blocks = python_blocks(ROOT / doc)
    assert blocks, f"{doc} has no Python example"
    script = tmp_path / "example.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg", "SEGCAM_EXAMPLE_OUTPUT": str(tmp_path / "out")}
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_api_reference_is_current():
    assert (ROOT / "docs" / "api.md").read_text(encoding="utf-8") == render(), "run `python docs/make_api.py` and commit docs/api.md"


def is_plain_data(obj) -> bool:
    """Enums, named tuples and dataclasses document their fields rather than a usage example."""
    return inspect.isclass(obj) and (issubclass(obj, (enum.Enum, tuple)) or dataclasses.is_dataclass(obj))


def test_every_public_name_has_a_docstring_with_an_example():
    undocumented, without_example = [], []
    for module, name, obj in public_objects():
        doc = inspect.getdoc(obj) or ""
        if not doc:
            undocumented.append(f"{module}.{name}")
        if not is_plain_data(obj) and "code-block" not in doc and ">>>" not in doc:
            without_example.append(f"{module}.{name}")
    assert not undocumented, undocumented
    assert not without_example, without_example
