"""Bad input to ``fit`` is refused before any work, with an error naming the field."""

import numpy as np
import pytest

from backend.errors import InvalidInput
from backend.recon import fit
from protocol.cameras import orbit_rig


def _good(V=4, F=3, size=16):
    rig = orbit_rig(V, size)
    images = np.full((V, F, size, size, 3), 255, dtype=np.uint8)
    images[:, :, 5:11, 6:10] = (200, 40, 40)
    return images, rig.K, rig.w2c, np.linspace(0, 1, F)


def _refused(field, images, K, w2c, times, **opts):
    with pytest.raises(InvalidInput) as err:
        fit(images, K, w2c, times, **opts)
    assert err.value.field == field, str(err.value)
    return str(err.value)


def test_camera_count_must_match_images():
    images, K, w2c, times = _good()
    msg = _refused("intrinsics", images, K[:3], w2c, times)
    assert "4" in msg and "3" in msg
    _refused("world_to_cam", images, K, w2c[:3], times)


def test_non_finite_or_non_rigid_poses_are_refused():
    images, K, w2c, times = _good()
    bad = w2c.copy()
    bad[2, 0, 3] = np.nan
    assert "NaN" in _refused("world_to_cam", images, K, bad, times)
    skew = w2c.copy()
    skew[1, :3, :3] *= 2.0
    assert "view 1" in _refused("world_to_cam", images, K, skew, times)
    k = K.copy()
    k[0, 0, 0] = np.inf
    _refused("intrinsics", images, k, w2c, times)


def test_empty_and_white_images_are_refused():
    images, K, w2c, times = _good()
    _refused("images", images[:, :0], K, w2c, times[:0])
    white = np.full_like(images, 255)
    assert "white" in _refused("images", white, K, w2c, times)
    one = images.copy()
    one[2, 1] = 255
    assert "view 2, frame 1" in _refused("images", one, K, w2c, times)
    rgba = np.concatenate([images, np.zeros(images.shape[:-1] + (1,), np.uint8)], -1)
    assert "alpha" in _refused("images", rgba, K, w2c, times)
    _refused("images", images.astype(np.float32), K, w2c, times)
    _refused("images", images[..., :2], K, w2c, times)


def test_times_must_match_frames_and_lie_in_unit_interval():
    images, K, w2c, times = _good()
    _refused("times", images, K, w2c, times[:2])
    _refused("times", images, K, w2c, np.array([0.0, 0.5, 1.5]))
    _refused("times", images, K, w2c, np.array([0.0, 0.6, 0.3]))


def test_iteration_budget_of_zero_and_unknown_options_are_refused():
    images, K, w2c, times = _good()
    assert "at least 1" in _refused("iterations", images, K, w2c, times, iterations=0)
    _refused("num_gaussians", images, K, w2c, times, num_gaussians=-5)
    _refused("loss", images, K, w2c, times, loss="mse")
    _refused("cancel", images, K, w2c, times, cancel=object())
    _refused("colour_space", images, K, w2c, times, colour_space="hsv")
    _refused("lr_shift", images, K, w2c, times, lr_shift=-0.1)
    _refused("w_shift_prior", images, K, w2c, times, w_shift_prior=float("nan"))
    _refused("lr_motion", images, K, w2c, times, lr_motion="fast")
    _refused("w_still", images, K, w2c, times, w_still=-1.0)
    _refused("still_dilation", images, K, w2c, times, still_dilation=1.5)
    assert "at most 8" in _refused("still_search", images, K, w2c, times, still_search=20.0)
    _refused("still_search", images, K, w2c, times, still_search=-1.0)
    _refused("arap_release", images, K, w2c, times, arap_release=0.0)
