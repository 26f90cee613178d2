"""Registering the add-on and drawing its panel in every state (headless bpy 5.0.1).

The panel check is screenshot-free: every D² panel's ``draw`` runs against a stand-in layout that
checks each call as Blender would (the property exists, the operator is registered, the icon is a
real icon) and records what was drawn, in the states disconnected, connecting, connected, running,
finished and error.
"""

from __future__ import annotations

import threading

import pytest

bpy = pytest.importorskip("bpy", reason="bpy (headless Blender) is not installed")

import blender_addon  # noqa: E402
from addon_helpers import draw_all_panels, drive, fresh_file  # noqa: E402
from blender_addon import samples, session as session_mod  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402

pytestmark = pytest.mark.blender


def _leftovers() -> dict:
    handlers = {name: len(getattr(bpy.app.handlers, name)) for name in dir(bpy.app.handlers)
                if not name.startswith("_") and isinstance(getattr(bpy.app.handlers, name), list)}
    return {
        "types": sorted(n for n in dir(bpy.types) if "dsquare" in n.lower()),
        "ops": sorted(dir(bpy.ops.dsquare)) if "dsquare" in dir(bpy.ops) else [],
        "scene_prop": hasattr(bpy.types.Scene, "dsquare"),
        "handlers": handlers,
        "statusbar": len(bpy.types.STATUSBAR_HT_header._dyn_ui_initialize()),
        "timer": bpy.app.timers.is_registered(session_mod.timer),
        "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("dsquare-client")),
    }


def test_register_unregister_leaves_nothing_behind():
    if blender_addon._registered:
        blender_addon.unregister()
    fresh_file()
    before = _leftovers()
    assert not before["types"] and not before["scene_prop"] and not before["timer"]
    for _ in range(2):
        blender_addon.register()
        during = _leftovers()
        assert "VIEW3D_PT_dsquare" in during["types"] and "DSQUARE_OT_generate" in during["types"]
        assert during["scene_prop"] and during["statusbar"] == before["statusbar"] + 1
        assert during["handlers"]["load_post"] == before["handlers"]["load_post"] + 1
        with FakeBackend() as fb:  # a live connection: a client thread and the timer
            assert session_mod.get().connect(fb.endpoint)
            drive(session_mod.get(), lambda: session_mod.get().connection == "connected", timeout=10)
            assert bpy.app.timers.is_registered(session_mod.timer)
            assert _leftovers()["threads"]
            blender_addon.unregister()
        after = _leftovers()
        assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        assert session_mod.SESSION is None


@pytest.fixture()
def addon():
    fresh_file()
    blender_addon.register()
    yield bpy.context
    blender_addon.unregister()


def _texts(calls, kind):
    return [d for k, d in calls if k == kind]


def test_panel_draws_in_every_state(addon):
    context = addon
    scene = context.scene
    session = session_mod.get()
    session.connect_timeout_s = 0.5
    samples.add_sample(context)
    seen = {}

    def draw(expected_state):
        assert session.ui_state == expected_state
        calls = draw_all_panels(context)
        seen[expected_state] = calls
        return calls

    calls = draw("disconnected")
    assert "dsquare.connect" in _texts(calls, "operator") and "dsquare.generate" in _texts(calls, "operator")
    assert "Not connected" in _texts(calls, "label") and "Flower" in _texts(calls, "label")

    with FakeBackend(behaviour="mute") as mute:
        assert session.connect(mute.endpoint)
        calls = draw("connecting")
        assert "Connecting…" in _texts(calls, "label")
        drive(session, lambda: session.ui_state == "error", timeout=10)  # nobody answers
    calls = draw("error")
    assert "The dsquare backend is unreachable" in _texts(calls, "label")
    assert "dsquare.dismiss" in _texts(calls, "operator")
    assert "python -m backend serve" in " ".join(_texts(calls, "label"))  # the backend's detail underneath

    with FakeBackend(steps=40, step_s=0.05) as fb:
        scene.dsquare.server = fb.endpoint
        scene.dsquare.views, scene.dsquare.frames, scene.dsquare.resolution = 4, 4, 16
        bpy.ops.dsquare.connect()
        drive(session, lambda: session.connection == "connected", timeout=10)
        calls = draw("connected")
        labels = _texts(calls, "label")
        assert any(t.startswith("Models: fake") for t in labels) and any(t.startswith("Views: 4, 8") for t in labels)
        scene.dsquare.views = 5  # not offered: the panel says so and offers the fix
        calls = draw_all_panels(context)
        assert any("Views 5" in t for t in _texts(calls, "label")) and "dsquare.fit_to_backend" in _texts(calls, "operator")
        bpy.ops.dsquare.fit_to_backend()
        assert scene.dsquare.views == 4 and scene.dsquare.resolution == 32
        assert not any(k == "operator" and d == "dsquare.fit_to_backend" for k, d in draw_all_panels(context))

        assert bpy.ops.dsquare.generate() == {"FINISHED"}
        drive(session, lambda: session.job.phase == "running" and session.job.step >= 2, timeout=15)
        calls = draw("running")
        assert _texts(calls, "progress") and "dsquare.cancel" in _texts(calls, "operator")
        assert any(t.startswith("Composing views × frames") for t in _texts(calls, "progress"))
        status = calls[calls.index(("panel", "status_bar")):]
        assert any(k == "progress" for k, _ in status)  # the status bar shows the job too
        assert session.job.factor > 0
        fb.step_s = 0.0
        drive(session, lambda: not session.busy, timeout=30)
        calls = draw("finished")
        assert "dsquare.bake_alembic" in _texts(calls, "operator") and "dsquare.bake_pc2" in _texts(calls, "operator")
        assert any("4 frames" in t for t in _texts(calls, "label"))
        assert "D² Turntable" in _texts(calls, "label") and "D² Matrix" in _texts(calls, "label")
        assert bpy.ops.dsquare.show_colours() == {"FINISHED"}
        views = [sp for a in context.screen.areas if a.type == "VIEW_3D" for sp in a.spaces if sp.type == "VIEW_3D"]
        assert views and all(sp.shading.type == "MATERIAL" for sp in views)
    assert set(seen) == {"disconnected", "connecting", "connected", "running", "finished", "error"}
    # the Advanced sub-panel draws every schedule's parameters
    for schedule in ("logistic", "constant", "linear", "cosine"):
        scene.dsquare.schedule = schedule
        draw_all_panels(context)
    scene.dsquare.motion_source = "CLIP"
    assert "clip_path" in _texts(draw_all_panels(context), "prop")
