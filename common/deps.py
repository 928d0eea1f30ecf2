"""Python dependencies: which packages a feature needs, lazy imports, and the installer.

Pure (no bpy), so the add-on registers in a stock Blender whose Python has none of our pip
packages, and the same installer runs headless (``python -m neural_avatar install-deps``).

* :func:`lazy` / :data:`np`: a module proxy that imports on first use and turns a missing
  package into a :class:`~.errors.DependencyError` worded for a user. Blender-facing modules
  use ``from ..deps import np`` so that registering imports neither numpy nor torch.
* :func:`require`: the check an operator or the engine runs before doing anything.
* :func:`install`: pip ``--target`` into a staging folder, a check of what was installed
  (a CPU choice must give a CPU build, a CUDA choice a CUDA build), then a swap into place.
  It never installs a second numpy over Blender's own (constrained to Blender's version and
  removed from the target), asks the PyTorch index first and refuses rather than falling
  back to PyPI's multi-GB CUDA build for a CPU request, and reports download size and
  progress through ``on_event`` (the UI's status bar, and stdout in ``blender -b``).
* Optional backends (a later issue's OpenVINO) are entries of :data:`PACKAGE_SETS`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from ..errors import DependencyError, NeuralAvatarError

TORCH_VERSION = "2.13.0"
PYPI_INDEX = "https://pypi.org/simple"
TORCH_INDEX = {
    "CPU": "https://download.pytorch.org/whl/cpu",
    "CUDA": "https://download.pytorch.org/whl/cu130",
}
DEPS_ENV = "NEURAL_AVATAR_DEPS"  # a shared, pre-installed deps folder (render farms)
MANIFEST = "neural_avatar_deps.json"  # written into a target after a verified install

# Where to get each importable name; the text a user reads when it is missing.
_PIP_NAMES = {"torch": "PyTorch", "smplx": "smplx", "safetensors": "safetensors",
              "pytorch_msssim": "pytorch-msssim", "openvino": "OpenVINO"}
INSTALL_HINT = ("Install the dependencies in the add-on's preferences (Edit → Preferences → Add-ons → "
                "Neural Avatar → Install Dependencies), or headless with "
                "`python -m neural_avatar install-deps`.")
NUMPY_HINT = ("Blender's Python has no numpy. Install your system's numpy package (Debian/Ubuntu: "
              "`sudo apt install python3-numpy`, Fedora: `sudo dnf install python3-numpy`), or use the "
              "add-on's Install Dependencies button, which then adds numpy too.")


class DependencyInstallError(NeuralAvatarError):
    """The installer failed or was refused; nothing was changed in the target."""


# --------------------------------------------------------------------------------------------
# What is needed, and lazy imports
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PackageSet:
    """A group of packages the installer offers (the core, or an optional backend)."""

    key: str
    label: str
    description: str
    requirements: tuple  # pip requirement strings besides torch
    modules: tuple  # import names that prove the set is installed
    needs_torch: bool = True
    optional: bool = False


PACKAGE_SETS = {
    "core": PackageSet(
        "core", "PyTorch and friends", "PyTorch, smplx, safetensors, pytorch-msssim: needed to render "
        "and train", ("smplx==0.1.28", "safetensors==0.7.0", "pytorch-msssim==1.0.0"),
        ("torch", "smplx", "safetensors", "pytorch_msssim")),
    "openvino": PackageSet(
        "openvino", "OpenVINO", "Faster CPU inference (optional backend, 59 MB, needs only numpy)",
        ("openvino==2026.4.1",), ("openvino",), needs_torch=False, optional=True),
}
CORE_MODULES = PACKAGE_SETS["core"].modules


def missing_modules(names: Iterable[str] = CORE_MODULES) -> list[str]:
    """Names among ``names`` that cannot be imported right now (no import is done). An already
    imported module answers at once, so hot paths (every redraw, every depsgraph update) may ask."""
    out = []
    for n in names:
        if n in sys.modules and sys.modules[n] is not None:
            continue
        try:
            if importlib.util.find_spec(n) is None:
                out.append(n)
        except (ImportError, ValueError):
            out.append(n)
    return out


def dependency_message(missing: Sequence[str], feature: str = "") -> str:
    """The user-facing text for missing modules (numpy gets the system-package hint)."""
    what = f"{feature} needs" if feature else "Neural Avatar needs"
    if "numpy" in missing:
        return f"{what} numpy. {NUMPY_HINT}"
    names = ", ".join(_PIP_NAMES.get(m, m) for m in missing)
    return f"{what} {names}, which {'is' if len(missing) == 1 else 'are'} not installed in Blender's Python. " \
           f"{INSTALL_HINT}"


def require(*names: str, feature: str = "") -> None:
    """Raise :class:`DependencyError` unless every module in ``names`` can be imported."""
    missing = missing_modules(names or ("numpy",) + CORE_MODULES)
    if missing:
        raise DependencyError(dependency_message(missing, feature))


class _LazyModule(types.ModuleType):
    """Imports ``_lazy_name`` on first attribute access; a missing package raises
    :class:`DependencyError`. After loading, the real module's namespace is copied in so later
    accesses are plain attribute lookups."""

    def __init__(self, name: str, package: Optional[str] = None):
        super().__init__(name)
        self.__dict__["_lazy_name"] = name
        self.__dict__["_lazy_package"] = package
        self.__dict__["_lazy_lock"] = threading.Lock()

    def _load(self):
        with self.__dict__["_lazy_lock"]:
            try:
                mod = importlib.import_module(self._lazy_name, self._lazy_package)
            except ImportError as e:
                top = (getattr(e, "name", None) or self._lazy_name).split(".")[0]
                raise DependencyError(dependency_message([top])) from e
            self.__dict__.update({k: v for k, v in mod.__dict__.items() if k not in ("__name__",)})
            self.__dict__["_lazy_module"] = mod
        return mod

    def __getattr__(self, attr):
        if attr.startswith("_lazy"):
            raise AttributeError(attr)
        mod = self.__dict__.get("_lazy_module") or self._load()
        return getattr(mod, attr)

    def __repr__(self):
        return f"<lazy module {self._lazy_name!r}>"


def lazy(name: str, package: Optional[str] = None) -> types.ModuleType:
    """A module that is imported when first used (``package`` for relative names)."""
    return _LazyModule(name, package)


np = lazy("numpy")


# --------------------------------------------------------------------------------------------
# Where dependencies live, and making them importable
# --------------------------------------------------------------------------------------------

def python_tag(version_info=None) -> str:
    v = version_info or sys.version_info
    return f"cp{v[0]}{v[1]}"


def add_to_path(target: str) -> bool:
    """Make packages in ``target`` importable, **after** Blender's own (so Blender's numpy and
    other bundled modules always win). A folder installed for another Python is skipped."""
    if not target or not os.path.isdir(target) or target in sys.path:
        return False
    info = read_manifest(target)
    if info and info.get("python") not in (None, python_tag()):
        return False
    sys.path.append(target)
    importlib.invalidate_caches()
    return True


def read_manifest(target: str) -> dict:
    try:
        with open(os.path.join(target, MANIFEST), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def python_executable() -> str:
    """The Python interpreter of this process (inside Blender: its bundled or system Python)."""
    exe = sys.executable or ""
    if exe and not os.path.basename(exe).lower().startswith("blender"):
        return exe
    # A Blender linked against the system's libpython reports itself; find that Python.
    name = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    found = shutil.which(name) or shutil.which(f"python{sys.version_info[0]}")
    if found:
        return found
    raise DependencyInstallError(f"Cannot find Blender's Python interpreter ({name}) to run pip.")


# --------------------------------------------------------------------------------------------
# The installer
# --------------------------------------------------------------------------------------------

@dataclass
class InstallPlan:
    """What one install runs: requirements, index options and the check afterwards."""

    variant: str  # CPU | CUDA | DEFAULT
    requirements: list
    index_args: list
    torch_index: Optional[str]  # asked before installing (None: PyPI only / offline)
    numpy_version: Optional[str]  # Blender's numpy, kept (None: Blender has none → install one)
    sets: list = field(default_factory=list)
    system_torch: Optional[dict] = None  # the interpreter's own PyTorch, kept (its build matches)


def plan_install(variant: str = "CPU", sets: Sequence[str] = ("core",), platform: str = sys.platform,
                 numpy_version: Optional[str] = "", index_url: str = "", find_links: Sequence[str] = (),
                 offline: bool = False, system_torch: Optional[dict] = None) -> InstallPlan:
    """Requirements and index options for ``variant`` on ``platform``.

    * ``CPU``: ``torch==X+cpu`` from the PyTorch CPU index (Linux, Windows); on macOS PyPI's
      wheel is the CPU/MPS build. The ``+cpu`` pin is what stops pip from silently taking
      PyPI's CUDA build when that index cannot be reached.
    * ``CUDA``: the PyTorch CUDA index first (Linux, Windows; refused on macOS).
    * ``DEFAULT``: PyPI's own build (macOS MPS).
    * ``index_url`` replaces PyPI (a farm's mirror), ``find_links`` adds wheel folders,
      ``offline`` uses only ``find_links`` (``--no-index``).
    * ``system_torch`` (``{"version", "cuda"}``): a PyTorch the interpreter already has (e.g.
      Debian's python3-torch) whose build matches ``variant`` is kept: the other packages are
      installed with ``--no-deps`` (their only dependencies are numpy and torch).
    """
    if variant not in ("CPU", "CUDA", "DEFAULT"):
        raise DependencyInstallError(f"Unknown install variant {variant!r} (use CPU, CUDA or DEFAULT).")
    unknown = [s for s in sets if s not in PACKAGE_SETS]
    if unknown:
        raise DependencyInstallError(f"Unknown package set(s) {', '.join(unknown)}; "
                                     f"known: {', '.join(PACKAGE_SETS)}.")
    mac = platform == "darwin"
    if variant == "CUDA" and mac:
        raise DependencyInstallError("CUDA builds of PyTorch do not exist for macOS; choose CPU (MPS is included).")
    if numpy_version == "":
        numpy_version = blender_numpy_version()
    reqs: list = []
    torch_needed = any(PACKAGE_SETS[s].needs_torch for s in sets)
    torch_index = None
    if system_torch is not None and not _build_matches(variant, system_torch.get("cuda")):
        system_torch = None
    if torch_needed and system_torch is None:
        if variant == "CPU" and not mac:
            reqs.append(f"torch=={TORCH_VERSION}+cpu")
            torch_index = TORCH_INDEX["CPU"]
        elif variant == "CUDA":
            reqs.append(f"torch=={TORCH_VERSION}")
            torch_index = TORCH_INDEX["CUDA"]
        else:
            reqs.append(f"torch=={TORCH_VERSION}")
    for s in sets:
        reqs += list(PACKAGE_SETS[s].requirements)
    if numpy_version is None:
        reqs.append("numpy<2")  # Blender without numpy (Debian's package): bring one
    args: list = []
    if offline:
        if not find_links:
            raise DependencyInstallError("Offline install needs a wheel folder (--find-links DIR).")
        args += ["--no-index"]
        torch_index = None
    else:
        if torch_index:
            args += ["--index-url", torch_index, "--extra-index-url", index_url or PYPI_INDEX]
        elif index_url:
            args += ["--index-url", index_url]
    for fl in find_links:
        args += ["--find-links", fl]
    if system_torch is not None:
        if numpy_version is None:
            raise DependencyInstallError("This Python has PyTorch but no numpy; install your system's numpy "
                                         "package (Debian/Ubuntu: `sudo apt install python3-numpy`).")
        args += ["--no-deps"]
    return InstallPlan(variant, reqs, args, torch_index, numpy_version, list(sets), system_torch)


def _build_matches(variant: str, cuda) -> bool:
    return {"CPU": cuda is None, "CUDA": cuda is not None}.get(variant, True)


def system_torch_of(python: str) -> Optional[dict]:
    """``{"version", "cuda", "file"}`` of a PyTorch the interpreter ``python`` imports on its own."""
    code = "import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda, " \
           "'file': torch.__file__}))"
    env = dict(os.environ, PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def blender_numpy_version() -> Optional[str]:
    """The numpy this Python already has (found without importing it), or None."""
    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.origin:
        return None
    try:
        from importlib import metadata

        return metadata.version("numpy")
    except Exception:  # noqa: BLE001 - a numpy without metadata: read its version file
        path = os.path.join(os.path.dirname(spec.origin), "version.py")
        try:
            m = re.search(r"""^version\s*[:=].*?['"]([^'"]+)['"]""", open(path).read(), re.M)
            return m.group(1) if m else None
        except OSError:
            return None


def numpy_version_of(python: str) -> Optional[str]:
    """numpy's version in the interpreter ``python`` (None: it has none)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable or ""):
        return blender_numpy_version()
    try:
        out = subprocess.run([python, "-c", "import numpy; print(numpy.__version__)"], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def pip_version(python: str) -> tuple:
    try:
        out = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DependencyInstallError(f"Could not run pip with {python} ({e}).") from e
    m = re.match(r"pip (\d+)\.(\d+)", out.stdout.strip())
    if out.returncode != 0 or not m:
        raise DependencyInstallError(
            "Blender's Python has no pip. Blender's own builds include it; for a system Blender install "
            "your system's pip package (Debian/Ubuntu: `sudo apt install python3-pip`).")
    return int(m.group(1)), int(m.group(2))


def pip_command(python: str, target: str, plan: InstallPlan, constraints: Optional[str] = None,
                progress_raw: bool = False, extra: Sequence[str] = ()) -> list:
    cmd = [python, "-m", "pip", "install", "--target", target, "--upgrade", "--disable-pip-version-check",
           "--no-input", "--no-warn-script-location", "--progress-bar", "raw" if progress_raw else "off"]
    cmd += plan.index_args
    if constraints:
        cmd += ["--constraint", constraints]
    cmd += list(extra)
    cmd += plan.requirements
    return cmd


def index_reachable(url: str, timeout: float = 10.0) -> Optional[str]:
    """None when ``url`` answers; otherwise the reason, in words."""
    if url.startswith("file:"):
        return None
    try:
        req = urllib.request.Request(url.rstrip("/") + "/torch/", method="GET",
                                     headers={"User-Agent": "neural-avatar-installer"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - fixed https URL
            resp.read(64)
        return None
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return str(getattr(e, "reason", e))


_SIZE_RE = re.compile(r"\(([\d.]+)\s*(kB|MB|GB|bytes)\)")
_UNIT = {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}


def parse_pip_line(line: str) -> Optional[dict]:
    """Progress events from pip's output: ``Downloading x (190.4 MB)`` and ``--progress-bar raw``'s
    ``Progress N of M``."""
    s = line.strip()
    m = re.match(r"Progress (\d+) of (\d+)$", s)
    if m:
        return {"kind": "bytes", "done": int(m.group(1)), "total": int(m.group(2))}
    if s.startswith(("Downloading ", "Using cached ")):
        name = s.split()[1 if s.startswith("Downloading") else 2]
        name = name.rsplit("/", 1)[-1]
        m = _SIZE_RE.search(s)
        size = int(float(m.group(1)) * _UNIT[m.group(2)]) if m else 0
        return {"kind": "file", "name": name, "size": size, "cached": s.startswith("Using cached")}
    return None


def format_mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def estimate_download(python: str, plan: InstallPlan, constraints: Optional[str], timeout: float = 600) -> dict:
    """Resolve without installing (``pip --dry-run --report``) and add up the files' sizes.

    Returns ``{"packages": [(name, version)], "bytes": total or 0 when unknown}``; an empty dict
    when the resolution itself is not possible (the real install then reports why)."""
    fd, report = tempfile.mkstemp(suffix=".json", prefix="na_pip_report_")
    os.close(fd)
    cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", report,
           "--disable-pip-version-check", "--no-input", *plan.index_args]
    if constraints:
        cmd += ["--constraint", constraints]
    cmd += plan.requirements
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            return {}
        with open(report, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}
    finally:
        try:
            os.unlink(report)
        except OSError:
            pass
    pkgs, urls = [], []
    for item in data.get("install", []):
        meta = item.get("metadata", {})
        pkgs.append((meta.get("name", "?"), meta.get("version", "?")))
        urls.append((item.get("download_info") or {}).get("url", ""))
    sizes = [0] * len(urls)

    def size_of(i, url):
        try:
            if url.startswith("file://"):
                sizes[i] = os.path.getsize(urllib.request.url2pathname(url[7:]))
            elif url.startswith("http"):
                req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "neural-avatar-installer"})
                with urllib.request.urlopen(req, timeout=15) as r:  # noqa: S310
                    sizes[i] = int(r.headers.get("Content-Length") or 0)
        except (OSError, ValueError):
            pass

    threads = [threading.Thread(target=size_of, args=(i, u), daemon=True) for i, u in enumerate(urls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return {"packages": pkgs, "bytes": int(sum(sizes))}


def run_pip(cmd: Sequence[str], on_line: Optional[Callable[[str], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> None:
    """Run pip, feeding each output line to ``on_line``; raise a readable error on failure."""
    tail: list = []
    env = dict(os.environ, PYTHONNOUSERSITE="1", PIP_NO_WARN_SCRIPT_LOCATION="1")
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, env=env)
    except OSError as e:
        raise DependencyInstallError(f"Could not start pip ({e}).") from e
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if not line.startswith("Progress "):
            tail = (tail + [line])[-15:]
        if on_line:
            on_line(line)
        if should_stop and should_stop():
            proc.terminate()
            proc.wait()
            raise DependencyInstallError("Installation cancelled; nothing was changed.")
    rc = proc.wait()
    if rc != 0:
        text = "\n".join(tail)
        hint = ""
        if "No matching distribution" in text and "+cpu" in text:
            hint = ("\nThe CPU build of PyTorch comes from the PyTorch package index, which pip could not "
                    "use. Nothing was installed.")
        elif "CERTIFICATE_VERIFY_FAILED" in text:
            hint = ("\npip could not verify the package index's HTTPS certificate (a company proxy?). Give pip "
                    "your proxy's certificate (PIP_CERT or `cert` in pip.conf). Nothing was installed.")
        tail = [l for l in tail if not l.startswith("WARNING: Retrying")][-8:] or tail[-3:]
        text = "\n".join(tail)
        raise DependencyInstallError(
            "Installing dependencies failed (pip exit code %d).%s Last output:\n%s" % (rc, hint, text))


_VERIFY = r"""
import json, sys
sys.path.append(sys.argv[1])
out = {"python": "cp%d%d" % sys.version_info[:2]}
try:
    import numpy
    out["numpy"] = numpy.__version__
    out["numpy_file"] = numpy.__file__
except Exception as e:
    out["numpy_error"] = repr(e)
mods = sys.argv[2].split(",") if sys.argv[2] else []
for m in mods:
    try:
        mod = __import__(m)
        out[m] = getattr(mod, "__version__", "ok")
    except Exception as e:
        out[m + "_error"] = "%s: %s" % (type(e).__name__, e)
if "torch" in mods and "torch_error" not in out:
    import torch
    out["torch_cuda"] = torch.version.cuda
    out["cuda_available"] = bool(torch.cuda.is_available())
    out["torch_file"] = torch.__file__
print("NA_VERIFY " + json.dumps(out))
"""


def verify_install(python: str, target: str, plan: InstallPlan) -> dict:
    """Import what was installed, in a fresh interpreter with ``target`` appended to its path,
    and check the build: CPU → ``torch.version.cuda is None``; CUDA → a CUDA build."""
    mods = []
    for s in plan.sets:
        mods += [m for m in PACKAGE_SETS[s].modules if m not in mods]
    env = dict(os.environ, PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.run([python, "-c", _VERIFY, target, ",".join(mods)], capture_output=True, text=True,
                              timeout=600, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DependencyInstallError(f"Could not check the installed packages ({e}).") from e
    line = next((l for l in proc.stdout.splitlines() if l.startswith("NA_VERIFY ")), None)
    if line is None:
        raise DependencyInstallError("Checking the installed packages failed:\n" + (proc.stderr or "")[-1500:])
    info = json.loads(line[len("NA_VERIFY "):])
    errors = [f"{k[:-6]}: {v}" for k, v in info.items() if k.endswith("_error")]
    if errors:
        raise DependencyInstallError("The installed packages do not import:\n" + "\n".join(errors))
    if "torch" in mods:
        cuda = info.get("torch_cuda")
        if plan.variant == "CPU" and cuda is not None:
            raise DependencyInstallError(
                f"A CUDA build of PyTorch (CUDA {cuda}) was installed although CPU was chosen; it was removed "
                "again. The PyTorch CPU index may be unreachable from this machine.")
        if plan.variant == "CUDA" and cuda is None:
            raise DependencyInstallError("A CPU-only build of PyTorch was installed although CUDA was chosen; "
                                         "it was removed again.")
        if not os.path.realpath(info.get("torch_file", "")).startswith(os.path.realpath(target)):
            info["torch_note"] = "torch came from outside the target (already installed)"
    if plan.numpy_version and info.get("numpy") != plan.numpy_version:
        raise DependencyInstallError(f"Blender's numpy {plan.numpy_version} would be replaced by numpy "
                                     f"{info.get('numpy')}; the install was undone.")
    return info


def _remove_numpy(target: str) -> list:
    """Delete numpy from ``target`` (Blender's own is used), return what was removed."""
    gone = []
    for name in os.listdir(target):
        low = name.lower()
        if low in ("numpy", "numpy.libs") or (low.startswith("numpy-") and low.endswith(".dist-info")):
            shutil.rmtree(os.path.join(target, name), ignore_errors=True)
            gone.append(name)
    bindir = os.path.join(target, "bin")
    for exe in ("f2py", "numpy-config"):
        p = os.path.join(bindir, exe)
        if os.path.exists(p):
            os.unlink(p)
    return gone


def install(target: str, variant: str = "CPU", sets: Sequence[str] = ("core",), python: Optional[str] = None,
            on_event: Optional[Callable[[dict], None]] = None, should_stop: Optional[Callable[[], bool]] = None,
            index_url: str = "", find_links: Sequence[str] = (), offline: bool = False,
            estimate: bool = True, use_system_torch: bool = True) -> dict:
    """Install ``sets`` for ``variant`` into ``target``; all or nothing.

    Events passed to ``on_event`` (dicts with ``"kind"``): ``status`` (text), ``estimate``
    (packages, bytes), ``file``/``bytes`` (download progress), ``line`` (pip output), ``done``.
    Returns the manifest written into ``target``.
    """
    emit = on_event or (lambda ev: None)
    python = python or python_executable()
    emit({"kind": "status", "text": f"Installing for {python}"})
    have_torch = system_torch_of(python) if use_system_torch else None
    plan = plan_install(variant, sets, numpy_version=numpy_version_of(python), index_url=index_url,
                        find_links=find_links, offline=offline, system_torch=have_torch)
    if plan.system_torch:
        emit({"kind": "status", "text": f"Using the installed PyTorch {plan.system_torch['version']} "
                                        f"({'CUDA ' + plan.system_torch['cuda'] if plan.system_torch['cuda'] else 'CPU'})"})
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    pv = pip_version(python)
    if plan.torch_index:
        emit({"kind": "status", "text": f"Checking the PyTorch package index {plan.torch_index} …"})
        why = index_reachable(plan.torch_index)
        if why:
            if variant == "CPU":
                raise DependencyInstallError(
                    f"The PyTorch CPU package index ({plan.torch_index}) cannot be reached ({why}). Nothing was "
                    "installed: PyPI's own PyTorch for Linux is a CUDA build of several GB. Connect to the "
                    "internet, or install from a wheel folder (README: render farms).")
            # PyPI's Linux wheel is itself a CUDA build; the check after installing confirms it.
            emit({"kind": "status", "text": f"The PyTorch CUDA index cannot be reached ({why}); using PyPI."})
            plan.index_args = (["--index-url", index_url] if index_url else []) + \
                [a for fl in find_links for a in ("--find-links", fl)]
            plan.torch_index = None
    staging = tempfile.mkdtemp(prefix=".na-deps-staging-", dir=parent)
    cfd, constraints = tempfile.mkstemp(prefix="na_constraints_", suffix=".txt")
    with os.fdopen(cfd, "w") as f:
        if plan.numpy_version:
            f.write(f"numpy=={plan.numpy_version}\n")
    try:
        if estimate:
            emit({"kind": "status", "text": "Resolving packages and download size …"})
            est = estimate_download(python, plan, constraints)
            if est:
                emit({"kind": "estimate", **est})
        totals = {"files_done": 0, "file_size": 0, "file_done": 0}

        def on_line(line):
            ev = parse_pip_line(line)
            if ev is None:
                emit({"kind": "line", "text": line})
                return
            if ev["kind"] == "file":
                totals["files_done"] += totals["file_size"]
                totals["file_size"] = ev["size"]
                totals["file_done"] = ev["size"] if ev["cached"] else 0
            else:
                totals["file_done"] = ev["done"]
            emit({**ev, "downloaded": totals["files_done"] + totals["file_done"]})

        emit({"kind": "status", "text": "Downloading and installing …"})
        run_pip(pip_command(python, staging, plan, constraints, progress_raw=pv >= (24, 1)), on_line, should_stop)
        removed = _remove_numpy(staging) if plan.numpy_version else []
        emit({"kind": "status", "text": "Checking the installed packages …"})
        info = verify_install(python, staging, plan)
        manifest = {"python": info.get("python", python_tag()), "variant": variant, "sets": list(sets),
                    "requirements": plan.requirements, "system_torch": plan.system_torch,
                    "installed": {k: v for k, v in info.items() if not k.endswith(("_file", "_note"))},
                    "numpy_removed": removed, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(os.path.join(staging, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        # Swap into place: the old folder goes only once the new one is complete and checked.
        old = None
        if os.path.exists(target):
            old = tempfile.mkdtemp(prefix=".na-deps-old-", dir=parent)
            os.rmdir(old)
            os.replace(target, old)
        os.replace(staging, target)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        emit({"kind": "done", "manifest": manifest})
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.unlink(constraints)


class ConsoleProgress:
    """``on_event`` for a terminal or ``blender -b``: a line at most every ``every`` seconds."""

    def __init__(self, stream=None, every: float = 3.0):
        self.stream = stream or sys.stdout
        self.every = every
        self.total = 0
        self._last = 0.0

    def __call__(self, ev: dict) -> None:
        kind = ev["kind"]
        now = time.monotonic()
        if kind == "status":
            self._print(ev["text"])
        elif kind == "estimate":
            self.total = ev.get("bytes", 0)
            names = ", ".join(f"{n} {v}" for n, v in ev.get("packages", []))
            size = format_mb(self.total) if self.total else "unknown size"
            self._print(f"To download: {size} ({len(ev.get('packages', []))} packages: {names})")
        elif kind == "file":
            self._print(("Using cached " if ev["cached"] else "Downloading ") + ev["name"]
                        + (f" ({format_mb(ev['size'])})" if ev["size"] else ""))
            self._last = now
        elif kind == "bytes" and now - self._last >= self.every:
            self._last = now
            total = f" of {format_mb(self.total)}" if self.total else ""
            self._print(f"  downloaded {format_mb(ev['downloaded'])}{total}")
        elif kind == "line" and ev["text"].startswith(("Installing collected", "Successfully installed")):
            self._print(ev["text"][:200])
        elif kind == "done":
            inst = ev["manifest"]["installed"]
            self._print("Installed and checked: " + ", ".join(f"{k} {v}" for k, v in inst.items()
                                                             if k in ("torch", "smplx", "safetensors", "openvino")))

    def _print(self, text: str) -> None:
        print(f"[neural_avatar install-deps] {text}", file=self.stream, flush=True)
