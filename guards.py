"""Guards on untrusted input (files, command lines). Pure: no bpy, no torch.

* Sizes: every size read from a file (or asked for on the command line) is checked here
  *before* anything is allocated, so a hostile or careless input ends in a
  :class:`~.errors.ResourceLimitError` with the memory it would need, never in an OOM kill that
  takes the user's unsaved Blender session with it.
* Names: a name read from a file that becomes part of a path goes through :func:`safe_name`.
"""
from __future__ import annotations

import os
import re
import sys

from .errors import NeuralAvatarError, ResourceLimitError

LIMIT_ENV = "NEURAL_AVATAR_MEMORY_LIMIT_MB"  # override (tests, farms sharing a machine)
DEFAULT_FRACTION = 0.5  # of the memory available now, for one allocation


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (Linux MemAvailable, macOS/Windows the
    free physical memory); 4 GiB when the system does not say."""
    try:
        if sys.platform.startswith("linux"):
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
                        break
                else:
                    avail = 0
            # A cgroup limit (containers, farm slots) is the tighter one.
            for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
                try:
                    raw = open(path).read().strip()
                except OSError:
                    continue
                if raw.isdigit() and int(raw) < (1 << 60):
                    used = 0
                    for upath in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
                        try:
                            used = int(open(upath).read().strip())
                            break
                        except (OSError, ValueError):
                            pass
                    avail = min(avail, max(0, int(raw) - used)) if avail else max(0, int(raw) - used)
            if avail:
                return avail
        elif sys.platform == "darwin":
            pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            return int(pages * 0.6)  # no cheap "available" figure: assume most of it
        elif sys.platform == "win32":
            import ctypes

            class _MemStatus(ctypes.Structure):
                _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                            ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                            ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                            ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                            ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

            st = _MemStatus()
            st.dwLength = ctypes.sizeof(_MemStatus)
            if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(st)):
                return int(st.ullAvailPhys)
    except (OSError, ValueError, AttributeError):
        pass
    return 4 << 30


def budget(fraction: float = DEFAULT_FRACTION) -> int:
    """Bytes one allocation may take: ``fraction`` of what is available (or the env override)."""
    env = os.environ.get(LIMIT_ENV, "")
    if env:
        try:
            return int(float(env) * (1 << 20))
        except ValueError:
            pass
    return int(available_memory() * fraction)


def fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_bytes(nbytes: float, what: str, fraction: float = DEFAULT_FRACTION, hint: str = "") -> None:
    """Refuse ``what`` when it would need more than the budget (nothing is allocated)."""
    limit = budget(fraction)
    if not (nbytes <= limit):  # also refuses NaN
        raise ResourceLimitError(
            f"{what} would need {fmt_bytes(nbytes)} of memory; {fmt_bytes(limit)} can be given to it on this "
            f"machine now.{' ' + hint if hint else ''}")


def check_elements(shape, itemsize: int, what: str, fraction: float = DEFAULT_FRACTION, hint: str = "") -> None:
    """:func:`check_bytes` for an array of ``shape`` (non-negative integers) and ``itemsize``."""
    n = 1
    for d in shape:
        d = int(d)
        if d < 0:
            raise ResourceLimitError(f"{what} has a negative size ({tuple(shape)}).")
        n *= d
    check_bytes(float(n) * itemsize, what, fraction, hint)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def safe_name(name, what: str, error=NeuralAvatarError) -> str:
    """``name`` if it can be a file-name component as it is: 1–64 letters, digits, ``_ . -``,
    starting with a letter or digit, no ``..``; otherwise ``error`` worded for the user."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise error(f"{what} {name!r} cannot be used in a file name: use 1–64 letters, digits, '_', '.' or '-', "
                    "starting with a letter or digit.")
    return name


def safe_relpath(path, what: str, error=NeuralAvatarError) -> str:
    """``path`` if it is a relative path that stays inside the folder it is joined to (no
    absolute path, drive, ``..`` component or NUL); otherwise ``error`` worded for the user."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise error(f"{what} {path!r} is not a file name.")
    parts = re.split(r"[\\/]+", path)
    if os.path.isabs(path) or path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path) or ".." in parts:
        raise error(f"{what} {path!r} leaves its folder; only paths inside it are read.")
    return path


def int_in(lo: int, hi: int, what: str = "value"):
    """An argparse ``type=``: an integer in [lo, hi], else argparse's own usage error (exit 2)."""
    import argparse

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be {lo}–{hi}, got {v}")
        return v

    parse.__name__ = what
    return parse


def float_in(lo: float, hi: float, what: str = "value", allow_zero: bool = False):
    """An argparse ``type=``: a finite float in [lo, hi] (or exactly 0 when ``allow_zero``)."""
    import argparse
    import math

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if allow_zero and v == 0:
            return 0.0
        if not math.isfinite(v) or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{what} must be {lo:g}–{hi:g}{' (or 0)' if allow_zero else ''}, got {text}")
        return v

    parse.__name__ = what
    return parse
