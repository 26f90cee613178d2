"""Build the installable Blender extension zip (and a legacy add-on zip).

    python scripts/build_addon.py                 # -> dist/dsquare-<version>.zip
    python scripts/build_addon.py --legacy        # also dist/dsquare-<version>-legacy.zip
    python scripts/build_addon.py --no-wheels     # without the pyzmq/msgpack wheels (quick dev build)

What goes in (files at the zip's root, as ``blender --command extension build`` lays them out):
* ``blender_addon/`` (sources, sample mesh), without caches;
* ``protocol/`` vendored as ``./protocol/`` with its absolute ``protocol.`` imports made relative,
  and checked to import nothing but the standard library, numpy, msgpack and pyzmq;
* ``wheels/``: pyzmq and msgpack for CPython 3.11 (Blender 4.2-5.0) and 3.13 (Blender 5.1+) on
  Linux x86_64, Windows amd64 and macOS arm64/x86_64, fetched with ``pip download --only-binary``
  into a cache (``.whl/``, never committed) and listed in the manifest's ``wheels``;
* ``blender_manifest.toml`` with ``platforms`` and ``wheels`` filled in.

The legacy zip has the same files under a ``dsquare/`` folder, no manifest (so Blender treats it as a
legacy add-on), and the wheels, which ``blender_addon/deps.py`` unpacks on first use.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11
    tomllib = None

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "blender_addon"
PROTOCOL = ROOT / "protocol"
DEFAULT_CACHE = ROOT / ".whl"
DEFAULT_OUT = ROOT / "dist"

PACKAGES = ("pyzmq==27.3.0", "msgpack==1.2.4")
PYTHONS = ("3.11", "3.13")
# Blender platform -> pip --platform (pip also accepts older compatible tags, e.g. macosx_10_9, universal2).
PLATFORMS = {
    "linux-x64": "manylinux_2_28_x86_64",
    "windows-x64": "win_amd64",
    "macos-arm64": "macosx_11_0_arm64",
    "macos-x64": "macosx_10_15_x86_64",
}
ALLOWED_PROTOCOL_IMPORTS = {"numpy", "msgpack", "zmq"}
EXCLUDE_DIRS = {"__pycache__", "protocol", "wheels", "_deps", ".pytest_cache"}
EXCLUDE_SUFFIXES = {".pyc", ".pyo", ".blend1"}
ZIP_DATE = (2024, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip


class BuildError(Exception):
    pass


# ----------------------------------------------------------------------------------------- manifest


def read_manifest(path: Path = ADDON / "blender_manifest.toml") -> dict:
    if tomllib is None:
        raise BuildError("Python 3.11+ is needed to read the manifest (tomllib)")
    return tomllib.loads(path.read_text(encoding="utf-8"))


def addon_version() -> str:
    """bl_info['version'] of blender_addon/__init__.py, read without importing bpy."""
    tree = ast.parse((ADDON / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "bl_info" for t in node.targets):
            info = ast.literal_eval(node.value)
            return ".".join(map(str, info["version"]))
    raise BuildError("bl_info not found in blender_addon/__init__.py")


def toml_list(values) -> str:
    if not values:
        return "[]"
    return "[\n" + "".join(f'  "{v}",\n' for v in values) + "]"


def built_manifest(source: str, platforms: list[str], wheels: list[str]) -> str:
    """The source manifest with ``platforms``/``wheels`` set (top-level keys go before the first
    table) and the ``[build]`` table dropped (it only matters when building)."""
    lines = source.splitlines()
    out, in_build = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            in_build = stripped in ("[build]",) or stripped.startswith("[build.")
        if in_build:
            continue
        if re.match(r"^(platforms|wheels)\s*=", stripped):
            raise BuildError("the source manifest must not set platforms or wheels: the build fills them in")
        out.append(line)
    first_table = next((i for i, l in enumerate(out) if l.strip().startswith("[")), len(out))
    insert = [f"platforms = {toml_list(platforms)}"]
    if wheels:
        insert.append(f"wheels = {toml_list(wheels)}")
    insert.append("")
    return "\n".join(out[:first_table] + insert + out[first_table:]).rstrip() + "\n"


# ------------------------------------------------------------------------------------------- protocol

_FROM_SUB = re.compile(r"^(\s*)from protocol\.([A-Za-z_][\w.]*) import ", re.M)
_FROM_PKG = re.compile(r"^(\s*)from protocol import ", re.M)
_IMPORT_AS = re.compile(r"^(\s*)import protocol\.([A-Za-z_]\w*) as (\w+)\s*$", re.M)


def relativise_protocol_imports(source: str, filename: str = "<protocol>") -> str:
    """``from protocol.x import y`` -> ``from .x import y`` (and friends); raises BuildError for an
    absolute ``protocol`` import it cannot rewrite, or for an import outside the allowed set."""
    out = _FROM_SUB.sub(r"\1from .\2 import ", source)
    out = _FROM_PKG.sub(r"\1from . import ", out)
    out = _IMPORT_AS.sub(r"\1from . import \2 as \3", out)
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | {"__future__"}
    for node in ast.walk(ast.parse(out, filename)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == "protocol":
                raise BuildError(f"{filename}:{node.lineno}: absolute import of {name!r} left after rewriting; "
                                 "use 'from protocol.x import y' or relative imports in protocol/")
            if top not in stdlib and top not in ALLOWED_PROTOCOL_IMPORTS:
                raise BuildError(f"{filename}:{node.lineno}: protocol/ imports {name!r}; inside Blender only the "
                                 f"standard library and {sorted(ALLOWED_PROTOCOL_IMPORTS)} are available")
    return out


# --------------------------------------------------------------------------------------------- wheels


@dataclass(frozen=True)
class WheelTarget:
    platform: str  # Blender's name, e.g. 'linux-x64'
    python: str  # '3.11'

    @property
    def key(self) -> str:
        return f"{self.platform}-cp{self.python.replace('.', '')}"


def _pins_stamp() -> str:
    return "\n".join(PACKAGES) + "\n"


def fetch_wheels(targets: list[WheelTarget], cache: Path, offline: bool = False, jobs: int = 8) -> dict[WheelTarget, list[Path]]:
    """Every target's wheels, from ``cache/<target>/`` or downloaded there with pip (in parallel)."""
    cache.mkdir(parents=True, exist_ok=True)
    result: dict[WheelTarget, list[Path]] = {}
    todo = []
    for t in targets:
        folder = cache / t.key
        stamp = folder / ".complete"
        if stamp.is_file() and stamp.read_text() == _pins_stamp():
            result[t] = sorted(folder.glob("*.whl"))
        else:
            todo.append(t)
    if todo and offline:
        raise BuildError(f"--offline: no cached wheels for {', '.join(t.key for t in todo)} in {cache}")

    def download(t: WheelTarget) -> tuple[WheelTarget, list[Path]]:
        folder = cache / t.key
        if folder.exists():
            shutil.rmtree(folder)
        tmp = Path(tempfile.mkdtemp(prefix=t.key + "-", dir=cache))
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet", "--no-deps",
               "--only-binary=:all:", "--implementation", "cp", "--platform", PLATFORMS[t.platform],
               "--python-version", t.python, "--dest", str(tmp), *PACKAGES]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise BuildError(f"pip download failed for {t.key}:\n{tail}")
        (tmp / ".complete").write_text(_pins_stamp())
        tmp.rename(folder)
        return t, sorted(folder.glob("*.whl"))

    if todo:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(download, t) for t in todo]
            for fut in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc="wheels", unit="target"):
                t, files = fut.result()
                result[t] = files
    for t in targets:
        names = {p.name.split("-")[0].lower() for p in result[t]}
        wanted = {re.split(r"[=<>!]", p)[0].lower() for p in PACKAGES}
        if names != wanted:
            raise BuildError(f"wheels for {t.key}: expected {sorted(wanted)}, have {sorted(names)}")
    return result


# ---------------------------------------------------------------------------------------------- build


def addon_files() -> list[tuple[Path, str]]:
    """(source path, archive path) of the add-on's own files."""
    out = []
    for path in sorted(ADDON.rglob("*")):
        rel = path.relative_to(ADDON)
        if path.is_dir() or any(part in EXCLUDE_DIRS for part in rel.parts[:-1]) or rel.parts[0] in EXCLUDE_DIRS:
            continue
        if path.suffix in EXCLUDE_SUFFIXES or path.name.startswith("."):
            continue
        out.append((path, rel.as_posix()))
    return out


def protocol_files() -> list[tuple[str, str]]:
    """(archive path, rewritten source) of the vendored protocol package."""
    out = []
    for path in sorted(PROTOCOL.glob("*.py")):
        out.append((f"protocol/{path.name}", relativise_protocol_imports(path.read_text(encoding="utf-8"), str(path))))
    if not any(name == "protocol/__init__.py" for name, _ in out):
        out.append(("protocol/__init__.py", ""))
    return out


def _write(zf: zipfile.ZipFile, arcname: str, data: bytes, compress: bool = True) -> None:
    info = zipfile.ZipInfo(arcname, ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def build(out_dir: Path = DEFAULT_OUT, *, wheels: bool = True, cache: Path = DEFAULT_CACHE, offline: bool = False,
          legacy: bool = False, platforms: list[str] | None = None, pythons: list[str] | None = None) -> dict[str, Path]:
    """Build the zip(s); returns {'extension': path, 'legacy': path?}."""
    manifest_text = (ADDON / "blender_manifest.toml").read_text(encoding="utf-8")
    manifest = read_manifest()
    version = addon_version()
    if manifest.get("version") != version:
        raise BuildError(f"blender_manifest.toml version {manifest.get('version')} != bl_info version {version}")
    platforms = list(platforms or PLATFORMS)
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown:
        raise BuildError(f"unknown platforms {unknown}; known: {sorted(PLATFORMS)}")
    wheel_paths: list[Path] = []
    if wheels:
        targets = [WheelTarget(p, py) for p in platforms for py in (pythons or PYTHONS)]
        fetched = fetch_wheels(targets, cache, offline=offline)
        seen = {}
        for t in targets:
            for w in fetched[t]:
                seen.setdefault(w.name, w)
        wheel_paths = [seen[n] for n in sorted(seen)]
    wheel_names = [f"./wheels/{w.name}" for w in wheel_paths]
    files = addon_files()
    proto = protocol_files()
    out_dir.mkdir(parents=True, exist_ok=True)
    built = {}

    ext_path = out_dir / f"{manifest['id']}-{version}.zip"
    tmp = ext_path.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w") as zf:
        for src, arc in files:
            if arc == "blender_manifest.toml":
                continue
            _write(zf, arc, src.read_bytes())
        for arc, text in proto:
            _write(zf, arc, text.encode("utf-8"))
        for w in wheel_paths:
            _write(zf, f"wheels/{w.name}", w.read_bytes(), compress=False)
        _write(zf, "blender_manifest.toml", built_manifest(manifest_text, platforms, wheel_names).encode("utf-8"))
    os.replace(tmp, ext_path)
    built["extension"] = ext_path

    if legacy:
        leg_path = out_dir / f"{manifest['id']}-{version}-legacy.zip"
        tmp = leg_path.with_suffix(".zip.part")
        top = manifest["id"]
        with zipfile.ZipFile(tmp, "w") as zf:
            for src, arc in files:
                if arc != "blender_manifest.toml":
                    _write(zf, f"{top}/{arc}", src.read_bytes())
            for arc, text in proto:
                _write(zf, f"{top}/{arc}", text.encode("utf-8"))
            for w in wheel_paths:
                _write(zf, f"{top}/wheels/{w.name}", w.read_bytes(), compress=False)
        os.replace(tmp, leg_path)
        built["legacy"] = leg_path
    return built


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: dist/)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache (default: .whl/)")
    p.add_argument("--no-wheels", action="store_true", help="leave the pyzmq/msgpack wheels out (dev builds)")
    p.add_argument("--offline", action="store_true", help="use cached wheels only; fail if any are missing")
    p.add_argument("--legacy", action="store_true", help="also build the legacy add-on zip")
    p.add_argument("--platform", action="append", choices=sorted(PLATFORMS), help="only these platforms (repeatable)")
    args = p.parse_args(argv)
    try:
        built = build(args.out, wheels=not args.no_wheels, cache=args.cache, offline=args.offline, legacy=args.legacy,
                      platforms=args.platform)
    except BuildError as exc:
        print(f"build_addon: {exc}", file=sys.stderr)
        return 1
    for kind, path in built.items():
        with zipfile.ZipFile(path) as zf:
            n = len(zf.namelist())
            whl = sum(1 for name in zf.namelist() if name.endswith(".whl"))
        print(f"{kind}: {path} ({path.stat().st_size / 2**20:.1f} MiB, {n} files, {whl} wheels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
