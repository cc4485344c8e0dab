# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""User-facing errors of the command line (reading images: :py:mod:`monai_segcam.files`)."""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["CLIError", "check_exists"]


class CLIError(Exception):
    """An error the user can act on: printed as one line on stderr, exit status 1, no traceback."""


def check_exists(paths: Sequence[str], what: str) -> None:
    """Raise :py:class:`CLIError` for the first of ``paths`` that does not exist."""
    for path in paths:
        if not os.path.exists(path):
            raise CLIError(f"{what} not found: {path}")
