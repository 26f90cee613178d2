"""Content checks against the advertised limits: every refusal names the field and the limit."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.errors import ErrorCode, ProtocolError
from protocol.validate import check_result, check_submit
from tests.protocol_fixtures import make_result, make_submit, small_limits


def refused(sub, limits=None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        check_submit(sub, limits or small_limits())
    assert info.value.job_id == sub.job_id
    assert info.value.message
    return info.value


def test_valid_submits_pass_in_every_mode():
    lim = small_limits()
    for mode in ("static3d", "video", "image"):
        check_submit(make_submit(mode=mode, vertices=20), lim)
    check_submit(make_submit(views=8, frames=8, res=16), lim)


def with_options(**kw):
    sub = make_submit()
    for k, v in kw.items():
        setattr(sub.options, k, v)
    return sub


@pytest.mark.parametrize("sub, field, code, limit_part", [
    (make_submit(views=5), "cameras.azimuth_deg.shape", ErrorCode.LIMIT_EXCEEDED, "4, 8"),
    (make_submit(frames=5), "options.frames", ErrorCode.LIMIT_EXCEEDED, "4, 8"),
    (make_submit(res=32), "turntable.shape", ErrorCode.LIMIT_EXCEEDED, "16x16 px"),
    (make_submit(res=8), "turntable.shape", ErrorCode.LIMIT_EXCEEDED, "16x16 px"),
    (make_submit(vertices=1001), "vertices.shape", ErrorCode.LIMIT_EXCEEDED, "1000"),
    (with_options(steps=51), "options.steps", ErrorCode.LIMIT_EXCEEDED, "1..50"),
    (with_options(steps=0), "options.steps", ErrorCode.LIMIT_EXCEEDED, "1..50"),
    (with_options(seed=-1), "options.seed", ErrorCode.LIMIT_EXCEEDED, "2^63"),
    (with_options(fit_iterations=10**6), "options.fit_iterations", ErrorCode.LIMIT_EXCEEDED, "2000"),
    (with_options(schedule="spiral"), "options.schedule", ErrorCode.INVALID_INPUT, "logistic"),
    (with_options(schedule_params={"s0": 0.5, "q": 1.0}), "options.schedule_params.q", ErrorCode.INVALID_INPUT, "w_max"),
    (with_options(schedule_params={"s0": 1.5}), "options.schedule_params.s0", ErrorCode.LIMIT_EXCEEDED, "[0.0, 1.0]"),
    (with_options(schedule_params={"k": float("nan")}), "options.schedule_params.k", ErrorCode.INVALID_INPUT, "1000"),
    (with_options(schedule_params={"w_min": 0.8, "w_max": 0.2}), "options.schedule_params.w_min", ErrorCode.INVALID_INPUT, "w_max"),
    (with_options(combine="sum"), "options.combine", ErrorCode.INVALID_INPUT, "convex"),
    (with_options(vrs_steps=9), "options.vrs_steps", ErrorCode.LIMIT_EXCEEDED, "0..5"),
    (with_options(vrs_repeats=0), "options.vrs_repeats", ErrorCode.LIMIT_EXCEEDED, "1..16"),
    (with_options(guidance=float("inf")), "options.guidance", ErrorCode.INVALID_INPUT, "50"),
    (with_options(fps=0.0), "options.fps", ErrorCode.LIMIT_EXCEEDED, "240"),
])
def test_refusals_name_field_and_limit(sub, field, code, limit_part):
    err = refused(sub)
    assert (err.field, err.code) == (field, code), err
    assert limit_part in err.limit, err


def test_mode_specific_content():
    sub = make_submit(mode="video")
    sub.reference = None
    assert refused(sub).field == "reference"
    sub = make_submit(mode="video")
    sub.reference = sub.reference[:2]
    assert refused(sub).field == "reference.shape"
    sub = make_submit(mode="static3d")
    sub.reference = make_submit(mode="video").reference
    assert refused(sub).field == "reference"
    sub = make_submit(mode="image")
    sub.turntable = make_submit().turntable  # 4 images in image mode
    assert refused(sub).field == "turntable.shape"
    sub = make_submit()
    sub.turntable = sub.turntable[:3]
    err = refused(sub)
    assert err.field == "turntable.shape" and "4" in err.limit
    sub = make_submit()
    sub.mode = "hologram"
    assert refused(sub).field == "mode"
    assert refused(small_submit_with(job_id="../../etc")).field == "job_id"
    lim = small_limits(modes=["static3d"])
    assert refused(make_submit(mode="video"), lim).field == "mode"


def small_submit_with(**kw):
    sub = make_submit()
    for k, v in kw.items():
        setattr(sub, k, v)
    return sub


def test_camera_content():
    sub = make_submit()
    sub.cameras.world_to_cam = sub.cameras.world_to_cam.copy()
    sub.cameras.world_to_cam[1, 0, 0] = np.nan
    assert refused(sub).field == "cameras.world_to_cam"
    sub = make_submit()
    sub.cameras.elevation_deg = np.full(4, 60.0)
    err = refused(sub)
    assert err.field == "cameras.elevation_deg" and "45" in err.limit
    sub = make_submit()
    sub.cameras.intrinsics = sub.cameras.intrinsics[:3]
    assert refused(sub).field == "cameras.intrinsics.shape"
    sub = make_submit()
    sub.cameras.world_to_cam = sub.cameras.world_to_cam * 2.0
    assert refused(sub).field == "cameras.world_to_cam"
    sub = make_submit()
    sub.turntable = np.zeros((4, 16, 20, 4), np.uint8)
    assert "16x16" in refused(sub).limit
    sub = make_submit(mode="video")
    sub.reference = np.zeros((4, 8, 8, 4), np.uint8)
    assert refused(sub).field == "reference.shape"


def test_vertex_content():
    sub = make_submit(vertices=10)
    sub.vertices[3, 1] = np.inf
    assert refused(sub).field == "vertices"
    sub = make_submit(vertices=10)
    sub.vertices *= 1000
    assert refused(sub).field == "vertices"
    sub = make_submit()
    sub.vertices = np.zeros((0, 3), np.float32)
    assert refused(sub).field == "vertices.shape"


def test_result_consistency():
    sub = make_submit(views=4, frames=4, vertices=7)
    res = make_result(sub.job_id, views=4, frames=4, vertices=7)
    check_result(res, sub)
    bad = make_result(sub.job_id, views=4, frames=4, vertices=7)
    bad.opacities = bad.opacities[:-1]
    with pytest.raises(ProtocolError) as info:
        check_result(bad, sub)
    assert info.value.code == ErrorCode.JOB_FAILED and info.value.field == "opacities.shape"
    with pytest.raises(ProtocolError) as info:
        check_result(make_result(sub.job_id, views=4, frames=4), sub)
    assert info.value.field == "vertices.shape"
    with pytest.raises(ProtocolError) as info:
        check_result(make_result(sub.job_id, views=8, frames=4, vertices=7), sub)
    assert info.value.field == "thumbnails.shape"
    nan = make_result(sub.job_id, views=4, frames=4, vertices=7)
    nan.centers[0, 0, 0] = np.nan
    with pytest.raises(ProtocolError) as info:
        check_result(nan, sub)
    assert info.value.field == "centers"
