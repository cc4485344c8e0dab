# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""``python -m monai_segcam``: the ``monai-segcam`` command line."""

from __future__ import annotations

from monai_segcam.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
