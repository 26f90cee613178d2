"""``scripts/build_addon.py``: the extension zip is valid, vendors protocol/, carries pyzmq/msgpack
for every platform and Python Blender 4.2+ uses, and installs and registers in Blender.

The real build downloads the wheels once (``pip download``, about a minute on a cold cache) into
``.whl/`` and reuses them afterwards; the manifest and import-rewriting logic is also tested on its
own without any download.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import build_addon  # noqa: E402
from blender_addon import deps  # noqa: E402

PLATFORM_CHECKS = {  # Blender platform -> what deps.wheel_fits needs to judge a wheel for it
    "linux-x64": dict(system="linux", machine="x86_64", glibc=(2, 28)),
    "windows-x64": dict(system="win32", machine="AMD64"),
    "macos-arm64": dict(system="darwin", machine="arm64", macos=(11, 0)),
    "macos-x64": dict(system="darwin", machine="x86_64", macos=(10, 15)),
}


def _blender_ext() -> Path | None:
    try:
        import bpy
    except ImportError:
        return None
    path = Path(bpy.utils.resource_path("LOCAL")) / "scripts" / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    return path if path.is_file() else None


def test_protocol_imports_become_relative_and_stay_light():
    src = ("from protocol.codec import decode, encode\nfrom protocol import cameras\n"
           "import protocol.messages as pm\ndef f():\n    from protocol.messages import Error\nimport numpy\nimport zmq\n")
    out = build_addon.relativise_protocol_imports(src)
    assert out == ("from .codec import decode, encode\nfrom . import cameras\nfrom . import messages as pm\n"
                   "def f():\n    from .messages import Error\nimport numpy\nimport zmq\n")
    with pytest.raises(build_addon.BuildError, match="absolute import"):
        build_addon.relativise_protocol_imports("import protocol.codec\n")
    with pytest.raises(build_addon.BuildError, match="imports 'torch'"):
        build_addon.relativise_protocol_imports("import torch\n")
    for arc, text in build_addon.protocol_files():  # the real package rewrites cleanly
        assert "from protocol" not in text and "import protocol" not in text, arc


def test_manifest_and_bl_info_agree():
    manifest = build_addon.read_manifest()
    assert manifest["id"] == "dsquare" and manifest["type"] == "add-on"
    assert manifest["version"] == build_addon.addon_version()
    assert manifest["blender_version_min"] == "4.2.0"
    assert set(manifest["permissions"]) == {"network", "files"}
    assert "wheels" not in manifest and "platforms" not in manifest  # filled in by the build
    text = build_addon.built_manifest((ROOT / "blender_addon" / "blender_manifest.toml").read_text(),
                                      ["linux-x64"], ["./wheels/a-1-cp311-cp311-manylinux_2_28_x86_64.whl"])
    import tomllib

    built = tomllib.loads(text)
    assert built["platforms"] == ["linux-x64"] and built["wheels"][0].startswith("./wheels/a-1")
    assert "build" not in built and built["permissions"] == manifest["permissions"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return build_addon.build(out, wheels=True, cache=ROOT / ".whl", legacy=True)


def test_extension_zip_layout_wheels_and_blender_validation(built):
    path = built["extension"]
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        manifest = zf.read("blender_manifest.toml").decode()
        vendored = {n: zf.read(n).decode() for n in names if n.startswith("protocol/")}
    import tomllib

    m = tomllib.loads(manifest)
    own = {arc for _, arc in build_addon.addon_files()}
    assert own <= names and "__init__.py" in names and "samples/flower.obj" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert {Path(n).name for n in vendored} == {p.name for p in (ROOT / "protocol").glob("*.py")}
    for name, text in vendored.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("protocol"), name
    wheels = sorted(n for n in names if n.endswith(".whl"))
    assert sorted(w[2:] for w in m["wheels"]) == wheels  # listed == shipped
    assert set(m["platforms"]) == set(PLATFORM_CHECKS)
    for platform, env in PLATFORM_CHECKS.items():
        for py in ((3, 11), (3, 13)):
            fits = {Path(w).name.split("-")[0] for w in wheels if deps.wheel_fits(Path(w).name, py, **env)}
            assert fits == {"pyzmq", "msgpack"}, (platform, py, fits)
    ext = _blender_ext()
    if ext is not None:
        proc = subprocess.run([sys.executable, str(ext), "validate", str(path)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.blender
def test_zips_install_and_register_in_blender(built, tmp_path):
    pytest.importorskip("bpy", reason="bpy (headless Blender) is not installed")
    legacy_dir = tmp_path / "scripts" / "addons"
    legacy_dir.mkdir(parents=True)
    with zipfile.ZipFile(built["legacy"]) as zf:
        assert "dsquare/__init__.py" in zf.namelist() and "dsquare/blender_manifest.toml" not in zf.namelist()
        assert any(n.startswith("dsquare/wheels/") for n in zf.namelist())
        zf.extractall(legacy_dir)
    code = f"""
import sys, bpy, addon_utils
r = bpy.ops.extensions.package_install_files(filepath={str(built['extension'])!r}, repo='user_default', enable_on_install=True)
assert r == {{'FINISHED'}}, r
ext = sys.modules['bl_ext.user_default.dsquare']
assert ext._protocol.VENDORED and ext._protocol.PACKAGE == 'bl_ext.user_default.dsquare.protocol'
assert ext._protocol.module('client').Client.__module__ == 'bl_ext.user_default.dsquare.protocol.client'
assert hasattr(bpy.ops.dsquare, 'generate') and hasattr(bpy.types.Scene, 'dsquare')
site = bpy.utils.user_resource('EXTENSIONS', path='.local')
import glob
assert glob.glob(site + '/lib/python*/site-packages/zmq/__init__.py'), 'pyzmq wheel not installed'
assert glob.glob(site + '/lib/python*/site-packages/msgpack/__init__.py'), 'msgpack wheel not installed'
addon_utils.disable('bl_ext.user_default.dsquare')
assert not hasattr(bpy.types.Scene, 'dsquare')
mod = addon_utils.enable('dsquare', default_set=True)  # the legacy copy
assert mod is not None and mod.__file__.startswith({str(legacy_dir)!r}), mod
assert mod._protocol.VENDORED and hasattr(bpy.ops.dsquare, 'generate')
addon_utils.disable('dsquare')
print('INSTALLED-OK')
"""
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "user"), "BLENDER_USER_SCRIPTS": str(tmp_path / "scripts")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env,
                          cwd=str(tmp_path))
    assert "INSTALLED-OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
