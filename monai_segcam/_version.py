# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The package version (a module of its own, so that any module can read it without importing the package)."""

__version__ = "0.1.0"
