"""Tiny stand-in wheels (torch, smplx, numpy, …) for testing the dependency installer offline:
pip installs them from a ``--find-links`` folder exactly as it would the real ones."""
from __future__ import annotations

import base64
import hashlib
import os
import zipfile


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(folder: str, dist: str, version: str, files: dict, requires=(), pad_bytes: int = 0) -> str:
    """Write ``{dist}-{version}-py3-none-any.whl`` with ``files`` (path → text) into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    norm = dist.replace("-", "_")
    info = f"{norm}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    entries = {k: v.encode() for k, v in files.items()}
    if pad_bytes:
        entries[f"{norm}/_pad.bin"] = os.urandom(pad_bytes)
    entries[f"{info}/METADATA"] = meta.encode()
    entries[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: fake\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = [_record_line(k, v) for k, v in entries.items()] + [f"{info}/RECORD,,"]
    entries[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = os.path.join(folder, f"{norm}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for k, v in entries.items():
            z.writestr(k, v)
    return path


def core_wheelhouse(folder: str, torch_cuda=None, numpy_version: str = "1.26.4") -> str:
    """Stand-ins for the core set at the installer's pins; ``torch_cuda`` None: a CPU build."""
    from neural_avatar.common import deps

    tv = deps.TORCH_VERSION + "+cpu"
    build_wheel(folder, "torch", tv, {
        "torch/__init__.py": f"__version__ = {tv!r}\nfrom . import version, cuda\n",
        "torch/version.py": f"cuda = {torch_cuda!r}\n",
        "torch/cuda.py": "def is_available():\n    return False\n",
    }, pad_bytes=20000)
    reqs = {"smplx": "0.1.28", "safetensors": "0.7.0", "pytorch-msssim": "1.0.0"}
    for dist, ver in reqs.items():
        mod = dist.replace("-", "_")
        build_wheel(folder, dist, ver, {f"{mod}/__init__.py": f"__version__ = {ver!r}\n"},
                    requires=("numpy",) if dist == "smplx" else ())
    build_wheel(folder, "numpy", numpy_version, {"numpy/__init__.py": f"__version__ = {numpy_version!r}\n"})
    build_wheel(folder, "openvino", "2026.4.1", {"openvino/__init__.py": "__version__ = '2026.4.1'\n"})
    return folder
