# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""Build ``docs/api.md`` from the docstrings of every public name (``python docs/make_api.py``).

``tests/test_docs.py`` checks that the committed page is up to date and that every public name has a docstring.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

MODULES = [
    "monai_segcam",
    "monai_segcam.cam",
    "monai_segcam.perturbation",
    "monai_segcam.transforms",
    "monai_segcam.inferers",
    "monai_segcam.handlers",
    "monai_segcam.report",
    "monai_segcam.metrics",
    "monai_segcam.files",
    "monai_segcam.outputs",
    "monai_segcam.visualize",
    "monai_segcam.data",
    "monai_segcam.utils",
    "monai_segcam.nnunet",
]


def public_objects():
    """(module name, name, object) for every function or class exported by ``MODULES``, each listed once."""
    seen = set()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and id(obj) not in seen:
                seen.add(id(obj))
                yield module_name, name, obj


def render() -> str:
    lines = ["# API reference", "", "Generated from the docstrings by `python docs/make_api.py`; do not edit by hand.", ""]
    current = None
    for module_name, name, obj in public_objects():
        if module_name != current:
            lines += [f"## `{module_name}`", ""]
            current = module_name
        try:
            signature = str(inspect.signature(obj))
        except (TypeError, ValueError):
            signature = "(...)"
        kind = "class" if inspect.isclass(obj) else "def"
        lines += [f"### `{kind} {name}{signature}`", "", inspect.cleandoc(obj.__doc__ or "").strip(), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    target = Path(__file__).with_name("api.md")
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
