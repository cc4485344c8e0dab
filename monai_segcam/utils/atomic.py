# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
"""The one way this package writes a file, atomically (the CAM files, tables, JSON and figures alike).

Every file is first written to a temporary file in its destination folder and then moved over the destination with
``os.replace`` (atomic on POSIX and Windows within one file system): a reader, a resumed run or a crash, even a
``SIGKILL``, never sees a partial file, and a failing writer leaves nothing behind. A temporary file left by a killed
process is recognised by its name (host and process id) and removed by :py:func:`remove_stale_temporaries`. It lies
below every layer (``visualize`` writes its figures with it); :py:mod:`monai_segcam.outputs` exports it.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["atomic_output", "remove_stale_temporaries"]

_HOST = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:40] or "host"
_TEMPORARY = re.compile(r"^\.tmp_(?P<host>[A-Za-z0-9-]+)_(?P<pid>\d+)_")


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Context manager giving a temporary path to write ``path`` to; on success it is moved over ``path``.

    The temporary file lies in ``path``'s folder (created if needed) and keeps ``suffix`` (default: the
    destination's extension, e.g. ``.nii.gz``, so writers choose the right format). If the block raises, the
    temporary file is removed and ``path`` is left as it was; an ``OSError`` (a full disk, a read-only folder) is
    raised again with the destination's name in its message.

    Example:
        .. code-block:: python

            with atomic_output("out/stats.csv") as tmp:
                with open(tmp, "w") as f:
                    f.write(text)
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if suffix is None:
        base = os.path.basename(path)
        suffix = ".nii.gz" if base.lower().endswith(".nii.gz") else os.path.splitext(base)[1]
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".tmp_{_HOST}_{os.getpid()}_", suffix=suffix, dir=folder)
        os.close(fd)
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as error:
        message = f"Could not write {path}: {error.strerror or error}"
        raise (OSError(error.errno, message) if error.errno else OSError(message)) from error
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files of :py:func:`atomic_output` in ``folder`` whose writing process (on this host) is
    gone, e.g. killed in the middle of a write; returns the names removed. Files of live processes are kept.

    Example:
        .. code-block:: python

            remove_stale_temporaries("cams")  # ['.tmp_node1_4242_a8x2.nii.gz'] after a killed run
    """
    folder = os.fspath(folder)
    removed = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = _TEMPORARY.match(name)
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
