"""Diffusion² for Blender (dsquare): one button from a static mesh to keyframed animation.

3D View ▸ Sidebar (N) ▸ tab "D²". Select a mesh, press Generate: the add-on renders a turntable of it
in a temporary scene, sends it to the dsquare backend (``python -m backend serve``), shows progress
and previews while the backend works, and imports the result as an animated point cloud plus a copy
of your mesh moving with keyed shape keys. Bake to Alembic or PC2 from the Result panel.

An extension for Blender 4.2+ (``blender_manifest.toml``; ``scripts/build_addon.py`` builds the zip
with ``protocol/`` vendored and the pyzmq/msgpack wheels), also loadable as a legacy add-on
(``bl_info``). Render helpers in ``render`` are importable without registering anything (they are
shared with the dataset and ground-truth scripts).
"""

bl_info = {
    "name": "Diffusion² (dsquare)",
    "author": "dsquare",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "3D View ▸ Sidebar ▸ D²",
    "description": "Animate a static mesh with video and multi-view diffusion (Diffusion²)",
    "doc_url": "",
    "category": "Animation",
}

_registered = False


def _classes():
    from . import operators, panel, props

    return (props.DSquareSettings, *operators.CLASSES, *panel.CLASSES)


def _load_post(_dummy=None):
    """A new file: forget the names of the last import (they belong to the previous file)."""
    from . import session

    if session.SESSION is not None:
        session.SESSION.outcome = None


def register():
    global _registered
    import bpy

    from . import panel, props

    if _registered:
        return
    try:  # legacy installs: unpack the bundled pyzmq/msgpack wheels (extensions get them from Blender)
        from . import deps

        deps.ensure_wheels()
    except Exception as exc:  # the panel says what is missing; never block registering
        print(f"[D²] could not set up pyzmq/msgpack from the bundled wheels: {exc!r}")
    for cls in _classes():
        bpy.utils.register_class(cls)
    bpy.types.Scene.dsquare = bpy.props.PointerProperty(type=props.DSquareSettings)
    bpy.types.STATUSBAR_HT_header.append(panel.draw_status_bar)
    bpy.app.handlers.load_post.append(_load_post_handler)
    _registered = True


def unregister():
    global _registered
    import bpy

    from . import panel, session

    if not _registered:
        return
    session.reset()
    if _load_post_handler in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_load_post_handler)
    try:
        bpy.types.STATUSBAR_HT_header.remove(panel.draw_status_bar)
    except ValueError:
        pass
    if hasattr(bpy.types.Scene, "dsquare"):
        del bpy.types.Scene.dsquare
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
    _registered = False


def _make_handler():
    import bpy

    return bpy.app.handlers.persistent(_load_post)


try:  # inside Blender (or bpy as a module)
    _load_post_handler = _make_handler()
except ImportError:  # imported without bpy (e.g. by the build script): nothing to register
    _load_post_handler = _load_post
