"""Valid messages of small sizes, shared by the protocol and server tests."""

from __future__ import annotations

import numpy as np

from protocol.cameras import orbit_rig
from protocol.messages import Cameras, Limits, Options, Result, Submit, new_job_id


def small_limits(**overrides) -> Limits:
    values = dict(views=[4, 8], frames=[4, 8], resolution=16, elevation_deg=[-30.0, 45.0], max_steps=50,
                  max_fit_iterations=2000, max_vertices=1000, max_message_bytes=4 * 2**20, max_queue=16,
                  max_queue_per_client=4, heartbeat_interval_s=0.2, heartbeat_timeout_s=2.0, result_ttl_s=60.0)
    values.update(overrides)
    return Limits(**values)


def make_submit(views: int = 4, frames: int = 4, res: int = 16, mode: str = "static3d", vertices: int = 0,
                seed: int = 0, steps: int = 5, job_id: str | None = None) -> Submit:
    rng = np.random.default_rng(seed)
    rig = orbit_rig(views, res)
    n_images = 1 if mode == "image" else views
    tt = rng.integers(0, 256, size=(n_images, res, res, 4), dtype=np.uint8)
    ref = rng.integers(0, 256, size=(frames, res, res, 4), dtype=np.uint8) if mode == "video" else None
    verts = (rng.uniform(-1, 1, size=(vertices, 3)).astype(np.float32) if vertices else None)
    return Submit(job_id=job_id or new_job_id(), mode=mode, turntable=tt, cameras=Cameras.from_rig(rig),
                  options=Options(frames=frames, steps=steps, seed=seed, fit_iterations=100), reference=ref,
                  vertices=verts)


def make_result(job_id: str, views: int = 4, frames: int = 4, gaussians: int = 50, vertices: int = 0) -> Result:
    rng = np.random.default_rng(1)
    return Result(
        job_id=job_id,
        centers=rng.normal(size=(frames, gaussians, 3)).astype(np.float32),
        colors=rng.integers(0, 256, size=(gaussians, 3), dtype=np.uint8),
        opacities=rng.uniform(size=gaussians).astype(np.float32),
        scales=rng.uniform(0.01, 0.1, size=(gaussians, 3)).astype(np.float32),
        thumbnails=rng.integers(0, 256, size=(views, frames, 8, 8, 3), dtype=np.uint8),
        frame_times=(np.arange(frames) / 8.0).astype(np.float32),
        metrics={"psnr": 21.5}, timings={"sampling": 1.25},
        vertices=rng.normal(size=(frames, vertices, 3)).astype(np.float32) if vertices else None,
    )
