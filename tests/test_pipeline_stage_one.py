"""Stage one of the main job (turntable -> composed matrix) on the built-in model architecture."""

import threading

import numpy as np
import pytest

from backend.errors import Cancelled, InvalidInput
from backend.models.registry import load_model_set
from backend.pipeline import sample_stage_one, thumbnails, validate_submit
from protocol.cameras import orbit_rig
from protocol.messages import Cameras, Options, Submit, new_job_id


@pytest.fixture(scope="module")
def models():
    # Random networks of the shipped architecture: this tests the plumbing, not image quality.
    return load_model_set("builtin", untrained=True)


def make_submit(models, mode="static3d", steps=1, **opts):
    V, F, res = models.limits.views[0], models.limits.frames[0], models.limits.resolution
    rig = orbit_rig(V, res, elevation_deg=10.0)
    rng = np.random.default_rng(0)
    tt = np.full((V, res, res, 4), 255, np.uint8)
    tt[:, 20:44, 24:40, :3] = rng.integers(0, 255, size=(V, 1, 1, 3), dtype=np.uint8)
    tt[..., 3] = 0
    tt[:, 20:44, 24:40, 3] = 255
    ref = None
    if mode == "image":
        tt = tt[:1]
    if mode == "video":
        ref = np.repeat(tt[:1], F, axis=0).copy()
        ref[:, 10:14] = 0
    return Submit(job_id=new_job_id(), mode=mode, turntable=tt, cameras=Cameras.from_rig(rig),
                  options=Options(frames=F, steps=steps, seed=3, fit_iterations=10, **opts), reference=ref)


class Recorder:
    def __init__(self):
        self.events, self.previews = [], []

    def progress(self, stage, step, total, message=""):
        self.events.append((stage, step, total))

    def preview(self, kind, images):
        self.previews.append((kind, images.shape, images.dtype))


@pytest.mark.parametrize("mode", ["static3d", "video", "image"])
def test_stage_one_fills_the_matrix_and_keeps_given_entries(models, mode):
    sub = make_submit(models, mode)
    rec = Recorder()
    out = sample_stage_one(sub, models, rec)
    V, F = sub.cameras.num_views, sub.options.frames
    res = models.limits.resolution
    assert out.images.shape == (V, F, res, res, 3) and out.images.dtype == np.uint8
    assert out.latents.shape == (V, F, *models.autoencoder.latent_shape)
    if mode != "image":
        np.testing.assert_array_equal(out.images[:, 0], sub.turntable[..., :3])  # the turntable row, exactly
    if mode == "video":
        np.testing.assert_array_equal(out.images[0, 1:], sub.reference[1:, ..., :3])  # the user's clip
    stages = [e[0] for e in rec.events]
    assert stages.count("sampling") == sub.options.steps  # progress at every sampling step
    kinds = {p[0] for p in rec.previews}
    assert {"turntable", "reference", "matrix"} <= kinds
    assert out.timings["sampling_s"] > 0


def test_stage_one_is_reproducible_for_a_seed(models):
    a = sample_stage_one(make_submit(models), models)
    b = sample_stage_one(make_submit(models), models)
    np.testing.assert_array_equal(a.images, b.images)


def test_cancel_stops_sampling(models):
    sub = make_submit(models, steps=4)
    ev = threading.Event()

    class CancelAtStep2(Recorder):
        def progress(self, stage, step, total, message=""):
            super().progress(stage, step, total, message)
            if stage == "sampling" and step == 2:
                ev.set()

    rec = CancelAtStep2()
    with pytest.raises(Cancelled):
        sample_stage_one(sub, models, rec, cancel=ev)
    assert max(s for st, s, _ in rec.events if st == "sampling") == 2


@pytest.mark.parametrize("change,field", [
    (lambda s: setattr(s, "turntable", s.turntable[:, :32, :32]), "turntable"),
    (lambda s: setattr(s.options, "frames", 5), "options.frames"),
    (lambda s: setattr(s.options, "steps", 10_000), "options.steps"),
    (lambda s: setattr(s, "mode", "video"), "reference"),
    (lambda s: setattr(s, "cameras", Cameras.from_rig(orbit_rig(4, 64))), "cameras"),
    (lambda s: setattr(s, "cameras", Cameras.from_rig(orbit_rig(8, 64, elevation_deg=80.0))), "cameras.elevation_deg"),
    (lambda s: setattr(s.options, "guidance", float("nan")), "options.guidance"),
])
def test_validation_names_field_and_limit(models, change, field):
    sub = make_submit(models)
    change(sub)
    with pytest.raises(InvalidInput) as e:
        validate_submit(sub, models)
    assert e.value.field == field


def test_thumbnails_downsample_by_integer_factor():
    img = np.zeros((2, 3, 256, 256, 3), np.uint8)
    img[..., 0] = 200
    t = thumbnails(img, 128)
    assert t.shape == (2, 3, 128, 128, 3) and (t[..., 0] == 200).all()
    assert thumbnails(img[:, :, :64, :64], 128).shape == (2, 3, 64, 64, 3)
