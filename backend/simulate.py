"""A simulated job runner: no diffusion, no fitting, just the shape of a job.

For testing clients and the server without models: ``python -m backend serve --runner simulated``
lets the add-on be developed against a server that accepts real Submits, reports progress once per
"sampling step" and per 50 "fitting iterations", sends previews, honours cancel, and returns a
well-formed Result (Gaussians on the submitted vertices or on the unit sphere, swaying about the
vertical axis; thumbnails are the turntable images, shrunk). It is never the default.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from backend.errors import Cancelled
from backend.jobs import Reporter
from protocol.messages import Result, Submit

SIMULATED_LIMITS = dict(views=(4, 8, 12, 16, 21), frames=(4, 8, 14, 25), resolution=576, elevation_deg=(-30.0, 45.0),
                        max_steps=200)


def simulated_model_limits():
    from backend.models.base import ModelLimits

    return ModelLimits(**SIMULATED_LIMITS)


class SimulatedRunner:
    """runner(submit, models, report, cancel) -> Result, taking ``step_s`` per sampling step and
    ``fit_s_per_50`` per 50 fitting iterations. ``steps_done`` counts sampling steps run (for
    tests that check how fast cancel acts)."""

    def __init__(self, step_s: float = 0.02, fit_s_per_50: float = 0.002, gaussians: int = 500, thumb: int = 32):
        self.step_s = step_s
        self.fit_s_per_50 = fit_s_per_50
        self.gaussians = gaussians
        self.thumb = thumb
        self.steps_done: dict[str, int] = {}
        self.started: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, submit: Submit, models, report: Reporter, cancel: threading.Event) -> Result:
        jid = submit.job_id
        with self._lock:
            self.started.append(jid)
            self.steps_done[jid] = 0
        o = submit.options
        V, F = submit.cameras.num_views, o.frames
        for step in range(o.steps):
            report.progress("sampling", step, o.steps, "simulated")
            if cancel.is_set():
                raise Cancelled(f"job {jid} cancelled at step {step}")
            time.sleep(self.step_s)
            with self._lock:
                self.steps_done[jid] += 1
            report.preview("matrix", self._thumbs(submit, V, 1)[:, 0])
        report.progress("sampling", o.steps, o.steps, "simulated")
        for it in range(0, o.fit_iterations, 50):
            report.progress("fitting", it, o.fit_iterations, "simulated")
            time.sleep(self.fit_s_per_50)
        report.progress("fitting", o.fit_iterations, o.fit_iterations, "simulated")
        return self._result(submit, V, F)

    def _thumbs(self, submit: Submit, V: int, F: int) -> np.ndarray:
        tt = submit.turntable
        step = max(1, tt.shape[1] // self.thumb)
        small = tt[:, ::step, ::step, :3]
        small = np.repeat(small, V, axis=0)[:V] if small.shape[0] == 1 else small
        return np.ascontiguousarray(np.repeat(small[:, None], F, axis=1))

    def _result(self, submit: Submit, V: int, F: int) -> Result:
        rng = np.random.default_rng(submit.options.seed)
        if submit.vertices is not None:
            base = submit.vertices[rng.integers(0, submit.vertices.shape[0], self.gaussians)]
        else:
            base = rng.normal(size=(self.gaussians, 3))
            base /= np.linalg.norm(base, axis=1, keepdims=True)
        t = np.arange(F) / submit.options.fps
        angles = 0.2 * np.sin(2 * np.pi * np.arange(F) / max(F, 1))

        def sway(points: np.ndarray) -> np.ndarray:
            out = np.empty((F, *points.shape), np.float32)
            for f, a in enumerate(angles):
                c, s = np.cos(a), np.sin(a)
                out[f, :, 0] = c * points[:, 0] - s * points[:, 1]
                out[f, :, 1] = s * points[:, 0] + c * points[:, 1]
                out[f, :, 2] = points[:, 2]
            return out

        return Result(
            job_id=submit.job_id, centers=sway(base.astype(np.float32)),
            colors=rng.integers(0, 256, (self.gaussians, 3), dtype=np.uint8),
            opacities=np.full(self.gaussians, 0.8, np.float32), scales=np.full((self.gaussians, 3), 0.02, np.float32),
            thumbnails=self._thumbs(submit, V, F), frame_times=t.astype(np.float32),
            metrics={"simulated": 1.0}, timings={},
            vertices=None if submit.vertices is None else sway(submit.vertices.astype(np.float32)),
        )
