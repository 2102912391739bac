"""The process's resident set size, read per process.

On Linux from ``/proc/self/statm`` through a descriptor kept open (about 1 us a read;
``psutil`` opens, reads and closes the file on every call, about 9 us, and every unit reads
it twice); elsewhere from a ``psutil.Process``. Both remember the process they were made
in, so both are dropped in every forked child (gunicorn and Celery fork after start-up).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_statm: int | None = None
_process: psutil.Process | None = None


def rss() -> int:
    """Resident set size of the current process, in bytes."""
    global _statm, _process  # noqa: PLW0603 - the per-process handles are this module's only state
    if sys.platform == "linux":
        if _statm is None:
            _statm = os.open("/proc/self/statm", os.O_RDONLY)
        return int(os.pread(_statm, 128, 0).split()[1]) * _PAGE_SIZE
    if _process is None:
        import psutil  # only where there is no /proc: imported on Linux, it cost every start 7 ms

        _process = psutil.Process()
    return int(_process.memory_info().rss)


def _forget() -> None:
    global _statm, _process  # noqa: PLW0603
    if _statm is not None:
        os.close(_statm)
    _statm = None
    _process = None


os.register_at_fork(after_in_child=_forget)
