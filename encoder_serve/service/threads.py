"""Thread names the operating system sees.

Python (before 3.14) names its threads for itself only: in `top -H`, `ps -L`, `/proc/<pid>/task/*/comm` and
a native profiler every thread of a worker is "python", so the model threads cannot be told from the
access-log writer or the operations port. The service's own threads call `name_os_thread` as they start;
`benchmarks/thread_cpu.py` reads these names to say which part of the service spends a request's CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Callable
from typing import Any

PR_SET_NAME = 15  # prctl(2): the calling thread's name, at most 15 bytes and a NUL
NAME_BYTES = 15

_prctl = None


def name_os_thread(name: str | None = None) -> bool:
    """Give the calling thread `name` (default: its Python name) in the kernel, cut to 15 bytes. True if the
    kernel took it; elsewhere than Linux, or if the call fails, nothing happens."""
    global _prctl
    if not sys.platform.startswith("linux"):
        return False
    if _prctl is None:
        try:
            _prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
        except (OSError, AttributeError):
            return False
    raw = (name or threading.current_thread().name).encode("utf-8", "replace")[:NAME_BYTES]
    return _prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) == 0


def named(name: str, target: Callable[..., Any]) -> Callable[..., Any]:
    """`target`, run in a thread that first takes `name` (for threading.Thread's target)."""
    def run(*args: Any, **kwargs: Any) -> Any:
        name_os_thread(name)
        return target(*args, **kwargs)
    return run
