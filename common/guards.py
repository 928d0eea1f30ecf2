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

from ..errors import NeuralAvatarError, ResourceLimitError

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


def npy_header(fileobj):
    """``(shape, dtype)`` an ``.npy`` stream declares, read without its data (numpy imported here)."""
    import numpy as np

    fmt = np.lib.format
    version = fmt.read_magic(fileobj)
    # 3.0 differs from 2.0 only in allowing UTF-8 field names
    reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0,
              (3, 0): fmt.read_array_header_2_0}.get(version)
    if reader is None:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, _, dtype = reader(fileobj)
    return shape, dtype


def load_npz(path, label: str, error=NeuralAvatarError, keys=None, fraction: float = DEFAULT_FRACTION) -> dict:
    """Arrays of an ``.npz`` (``keys``: only those present), each member's declared size checked
    against the memory budget *before* it is decompressed; pickled members are refused. Every
    failure is ``error`` (or :class:`ResourceLimitError`) worded with ``label``."""
    import zipfile

    import numpy as np

    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - whatever numpy throws on garbage
        raise error(f"{label} cannot be read as an .npz archive ({type(e).__name__}: {e}).") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise error(f"{label} is a single array, not an .npz archive.")
    out = {}
    with npz:
        for key in npz.files:
            if keys is not None and key not in keys:
                continue
            try:
                with npz.zip.open(key + ".npy") as f:
                    shape, dtype = npy_header(f)
            except (KeyError, zipfile.BadZipFile) as e:
                raise error(f"{label}: member '{key}' is unreadable ({e}).") from None
            except Exception as e:  # noqa: BLE001 - a garbled header (SyntaxError, zlib.error, ...)
                raise error(f"{label}: member '{key}' is damaged ({type(e).__name__}).") from None
            if dtype.hasobject:
                raise error(f"{label}: '{key}' is stored as pickled Python objects, which are not loaded.")
            check_elements(shape, max(1, dtype.itemsize), f"{label}: '{key}' {tuple(shape)}", fraction)
            try:
                out[key] = npz[key]
            except Exception as e:  # noqa: BLE001
                raise error(f"{label}: member '{key}' is damaged ({type(e).__name__}: {e}).") from None
    return out


def load_npy(path, label: str, error=NeuralAvatarError, fraction: float = DEFAULT_FRACTION):
    """One ``.npy`` array, its declared size checked first; pickles refused."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            shape, dtype = npy_header(f)
    except OSError as e:
        raise error(f"{label} cannot be read ({e.strerror or e}).") from None
    except Exception as e:  # noqa: BLE001
        raise error(f"{label} is not a valid .npy file ({type(e).__name__}).") from None
    if dtype.hasobject:
        raise error(f"{label} holds pickled Python objects, which are not loaded.")
    check_elements(shape, max(1, dtype.itemsize), label, fraction)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise error(f"{label} is damaged ({type(e).__name__}: {e}).") from None


MAX_JSON_BYTES = 256 << 20  # a dataset.json / cameras.json / bundle .json larger than this is refused


def parse_json(text, label: str, error=NeuralAvatarError):
    """``json.loads`` whose every failure (bad syntax, bad encoding, nesting deep enough for a
    RecursionError, numbers too large) is ``error`` worded with ``label``."""
    import json

    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{label} is nested too deeply to be one of our files.") from None
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise error(f"{label} is not valid JSON ({e}).") from None


def load_json(path, label: str, error=NeuralAvatarError, max_bytes: int = MAX_JSON_BYTES):
    """Read a JSON file from an untrusted source (size checked first; see :func:`parse_json`)."""
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise error(f"{label} is {fmt_bytes(size)}; files of this kind are at most {fmt_bytes(max_bytes)}.")
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise error(f"{label} cannot be read ({e.strerror or e}).") from None
    return parse_json(raw, label, error)


def image_size(path):
    """``(height, width)`` a PNG or JPEG declares in its header (read without decoding), or None
    for another format. Lets a loader refuse a hostile image before the decoder allocates it."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
                w, h = struct.unpack(">II", head[16:24])
                return int(h), int(w)
            if head[:2] == b"\xff\xd8":  # JPEG: walk the markers to the first start-of-frame
                f.seek(2)
                for _ in range(10000):
                    b = f.read(1)
                    while b and b != b"\xff":
                        b = f.read(1)
                    while b == b"\xff":
                        b = f.read(1)
                    if not b:
                        return None
                    marker = b[0]
                    if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                        continue
                    seg = f.read(2)
                    if len(seg) < 2:
                        return None
                    length = struct.unpack(">H", seg)[0]
                    if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                        sof = f.read(5)
                        if len(sof) < 5:
                            return None
                        h, w = struct.unpack(">HH", sof[1:5])
                        return int(h), int(w)
                    f.seek(max(0, length - 2), 1)
    except (OSError, struct.error):
        return None
    return None


def check_image(path, label: str, error=NeuralAvatarError, expect=None, fraction: float = DEFAULT_FRACTION) -> None:
    """Before decoding ``path``: its declared size fits the memory budget and, with ``expect``
    ``(h, w)``, equals it."""
    size = image_size(path)
    if size is None:
        return
    if expect is not None and tuple(size) != tuple(expect):
        raise error(f"{label} is {size[1]}x{size[0]} pixels; {expect[1]}x{expect[0]} were expected.")
    try:
        check_elements((size[0], size[1], 4), 4, label, fraction)
    except ResourceLimitError as e:
        raise error(str(e)) from None
