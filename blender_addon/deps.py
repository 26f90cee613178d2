"""pyzmq and msgpack for a *legacy* install of the add-on.

Installed as an extension (Blender 4.2+), Blender itself installs the wheels the manifest lists.
Copied as a legacy add-on (the ``-legacy.zip`` of ``scripts/build_addon.py``) nothing does, so on
register ``ensure_wheels`` unpacks the bundled wheels that fit this Python and platform into
``<add-on>/_deps/<tag>/`` and puts that folder on ``sys.path`` (once; later starts only add the path).
No bpy, no pip: wheels are zip files.
"""

from __future__ import annotations

import importlib
import platform
import re
import sys
import zipfile
from pathlib import Path

ADDON_DIR = Path(__file__).resolve().parent
NEEDED = {"zmq": "pyzmq", "msgpack": "msgpack"}


def missing(modules=NEEDED) -> list[str]:
    out = []
    for mod, dist in modules.items():
        try:
            importlib.import_module(mod)
        except ImportError:
            out.append(dist)
    return out


def _glibc() -> tuple[int, int]:
    lib, ver = platform.libc_ver()
    m = re.match(r"(\d+)\.(\d+)", ver or "")
    return (int(m.group(1)), int(m.group(2))) if lib == "glibc" and m else (0, 0)


def platform_ok(tag: str, system: str | None = None, machine: str | None = None,
                glibc: tuple[int, int] | None = None, macos: tuple[int, int] | None = None) -> bool:
    """Whether a wheel platform tag (one of the dot-separated ones) runs here."""
    system = system or sys.platform
    machine = (machine or platform.machine()).lower()
    machine = {"amd64": "x86_64", "aarch64": "aarch64", "arm64": "arm64"}.get(machine, machine)
    if tag == "any":
        return True
    if system.startswith("linux"):
        m = re.match(r"manylinux_(\d+)_(\d+)_(\w+)$", tag)
        legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
        if m:
            need, arch = (int(m.group(1)), int(m.group(2))), m.group(3)
        else:
            m = re.match(r"(manylinux1|manylinux2010|manylinux2014)_(\w+)$", tag)
            if not m:
                return False
            need, arch = legacy[m.group(1)], m.group(2)
        return arch == machine and (glibc or _glibc()) >= need
    if system == "win32":
        return tag == {"x86_64": "win_amd64", "arm64": "win_arm64"}.get(machine, "")
    if system == "darwin":
        m = re.match(r"macosx_(\d+)_(\d+)_(\w+)$", tag)
        if not m:
            return False
        if macos is None:
            parts = (platform.mac_ver()[0] or "0.0").split(".")
            macos = (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
        arch = m.group(3)
        arch_ok = arch == machine or arch == "universal2" or (arch == "intel" and machine == "x86_64")
        return arch_ok and macos >= (int(m.group(1)), int(m.group(2)))
    return False


def wheel_fits(filename: str, py: tuple[int, int] | None = None, **plat) -> bool:
    """Whether wheel ``filename`` (name-version-python-abi-platform.whl) installs on this Python/platform."""
    py = py or sys.version_info[:2]
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6):
        return False
    pytags, abis, plats = parts[-3].split("."), parts[-2].split("."), parts[-1].split(".")
    here = f"cp{py[0]}{py[1]}"
    py_ok = False
    for pt in pytags:
        if pt == here or pt in (f"py{py[0]}", f"py{py[0]}{py[1]}"):
            py_ok = True
        elif "abi3" in abis and re.match(r"cp(\d)(\d+)$", pt):
            m = re.match(r"cp(\d)(\d+)$", pt)
            py_ok = py_ok or (int(m.group(1)), int(m.group(2))) <= py
    abi_ok = any(a in (here, "abi3", "none") for a in abis)
    return py_ok and abi_ok and any(platform_ok(t, **plat) for t in plats)


def ensure_wheels(wheels_dir: Path | None = None, deps_root: Path | None = None) -> list[str]:
    """Unpack fitting wheels for the missing modules and put them on sys.path; returns what is still missing."""
    still = missing()
    wheels_dir = wheels_dir or ADDON_DIR / "wheels"
    if not still or not wheels_dir.is_dir():
        return still
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}-{sys.platform}-{platform.machine().lower()}"
    target = (deps_root or ADDON_DIR / "_deps") / tag
    stamp = target / ".complete"
    if not stamp.is_file():
        target.mkdir(parents=True, exist_ok=True)
        for whl in sorted(wheels_dir.glob("*.whl")):
            dist = whl.name.split("-")[0].lower().replace("_", "-")
            if dist in still and wheel_fits(whl.name):
                with zipfile.ZipFile(whl) as zf:
                    zf.extractall(target)
        stamp.write_text("\n".join(sorted(p.name for p in wheels_dir.glob("*.whl"))))
    if str(target) not in sys.path:
        sys.path.append(str(target))
    importlib.invalidate_caches()
    return missing()
