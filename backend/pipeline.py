"""The main job: a turntable (and optionally a reference clip) in, an animated result out.

    encode turntable -> [generate column 0 (and row 0 in image mode)] -> compose the V x F latent
    matrix (row 0 and column 0 known) -> decode -> fit 4D Gaussians -> transfer motion to the mesh

Every stage reports progress through a ``Reporter`` (``progress(stage, step, total, message)`` and
``preview(kind, images)``); ``cancel`` (an Event) stops the job within one sampling step or 50 fit
iterations with ``backend.errors.Cancelled``. Bad job content raises ``InvalidInput`` naming the
field and the limit, before any network call. The same code runs built-in and real model sets.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from backend.errors import InvalidInput
from backend.jobs import Reporter
from backend.models.base import ModelSet
from backend.sampling.compose import VRS, Known, sample_matrix
from backend.sampling.schedules import karras_sigmas, schedule_from_options
from backend.sampling.sequence import sample_sequences
from protocol.messages import Result, Submit

PREVIEW_INTERVAL_S = 1.0
THUMBNAIL_MAX_SIDE = 128


class NullReporter:
    """A reporter that drops everything (scripts that don't need progress)."""

    def progress(self, stage, step, total, message=""):
        pass

    def preview(self, kind, images):
        pass


@dataclass
class StageOne:
    """The sampled matrix: latents [V, F, C, h, w] and decoded images uint8 [V, F, H, W, 3] (RGB on white)."""

    latents: Tensor
    images: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- validation


def validate_submit(submit: Submit, models: ModelSet) -> None:
    """Check a job against what the model set can do; raise InvalidInput naming field and limit."""
    lim = models.limits
    o = submit.options
    V = submit.cameras.num_views
    if V not in lim.views:
        raise InvalidInput("cameras", f"{models.name} models produce {_one_of(lim.views)} views, got {V} cameras")
    if o.frames not in lim.frames:
        raise InvalidInput("options.frames", f"{models.name} models produce {_one_of(lim.frames)} frames, got {o.frames}")
    expected_rows = 1 if submit.mode == "image" else V
    tt = submit.turntable
    if tt.shape[0] != expected_rows:
        raise InvalidInput("turntable", f"mode {submit.mode!r} needs {expected_rows} turntable image(s) (one per "
                           f"camera{'' if expected_rows == V else ': the front view'}), got {tt.shape[0]}")
    res = lim.resolution
    if tt.shape[1] != res or tt.shape[2] != res:
        raise InvalidInput("turntable", f"{models.name} models work at {res}\u00d7{res}, got {tt.shape[2]}\u00d7{tt.shape[1]}")
    if submit.mode == "video":
        ref = submit.reference
        if ref is None:
            raise InvalidInput("reference", "mode 'video' needs a reference clip [F, H, W, 4]")
        if ref.shape[0] != o.frames or ref.shape[1:3] != (res, res):
            raise InvalidInput("reference", f"expected {o.frames} frames at {res}\u00d7{res}, "
                               f"got {ref.shape[0]} at {ref.shape[2]}\u00d7{ref.shape[1]}")
    elev = np.asarray(submit.cameras.elevation_deg, dtype=np.float64)
    lo, hi = lim.elevation_deg
    if (elev < lo - 1e-6).any() or (elev > hi + 1e-6).any():
        raise InvalidInput("cameras.elevation_deg", f"{models.name} models support orbit elevations {lo:g}\u00b0..{hi:g}\u00b0, "
                           f"got {elev.min():.1f}\u00b0..{elev.max():.1f}\u00b0")
    if not 1 <= o.steps <= lim.max_steps:
        raise InvalidInput("options.steps", f"must be within 1..{lim.max_steps}, got {o.steps}")
    if o.vrs_steps < 0 or o.vrs_repeats < 1:
        raise InvalidInput("options.vrs_steps", f"need vrs_steps >= 0 and vrs_repeats >= 1, got {o.vrs_steps}, {o.vrs_repeats}")
    if o.combine == "theorem" and models.element is None:
        raise InvalidInput("options.combine", f"{models.name} models have no one-image marginal for theorem mode")
    if o.guidance is not None and not (math.isfinite(o.guidance) and o.guidance >= 0):
        raise InvalidInput("options.guidance", f"must be a finite number >= 0, got {o.guidance}")


def _one_of(values) -> str:
    values = list(values)
    return str(values[0]) if len(values) == 1 else "one of " + ", ".join(map(str, values))


# ----------------------------------------------------------------------------------------- conversions


def rgba_to_tensor(images: np.ndarray) -> Tensor:
    """uint8 [N, H, W, 3|4] (RGB on white) -> float [N, 3, H, W] in [-1, 1]."""
    rgb = torch.from_numpy(np.ascontiguousarray(images[..., :3])).float()
    return (rgb / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def tensor_to_rgb(images: Tensor) -> np.ndarray:
    """float [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def thumbnails(images: np.ndarray, max_side: int = THUMBNAIL_MAX_SIDE) -> np.ndarray:
    """Downsample uint8 [..., H, W, 3] by an integer factor so that the side is <= max_side."""
    H, W = images.shape[-3:-1]
    k = max(1, math.ceil(max(H, W) / max_side))
    if k == 1:
        return np.ascontiguousarray(images)
    h, w = H // k, W // k
    x = images[..., : h * k, : w * k, :].reshape(*images.shape[:-3], h, k, w, k, 3).astype(np.float32)
    return np.ascontiguousarray(x.mean(axis=(-4, -2)).round().astype(np.uint8))


def _decode(models: ModelSet, latents: Tensor, chunk: int = 16) -> Tensor:
    """latents [N, C, h, w] -> images [N, 3, H, W] in [-1, 1], decoded in chunks to bound memory.

    Temporal decoders (SVD-XT's) see each chunk as one clip: pass the frames of one video in order and
    a chunk that divides them (the matrix is decoded one row at a time)."""
    ae = models.autoencoder
    outs = [ae.decode(latents[i:i + chunk]).float().cpu() for i in range(0, latents.shape[0], chunk)]
    return torch.cat(outs)


@contextmanager
def _guidance(models: ModelSet, scale: float | None):
    """Use a job's guidance scale (None: the models' own) on models that have one, restoring the
    model set's defaults after."""
    saved = []
    if scale is not None:
        for m in (models.video, models.multiview, models.element):
            if m is not None and hasattr(m, "guidance") and all(m is not s[0] for s in saved):
                saved.append((m, m.guidance))
                m.guidance = float(scale)
    try:
        yield
    finally:
        for m, g in reversed(saved):
            m.guidance = g


# ----------------------------------------------------------------------------------------- stage one


def sample_stage_one(submit: Submit, models: ModelSet, report: Reporter | None = None, cancel=None) -> StageOne:
    """Generate the V x F image matrix for a job (validated beforehand with ``validate_submit``)."""
    report = report or NullReporter()
    o = submit.options
    V, F = submit.cameras.num_views, o.frames
    device = models.device
    ae = models.autoencoder
    C, h, w = ae.latent_shape
    timings: dict[str, float] = {}
    gen = torch.Generator().manual_seed(int(o.seed))
    sigmas = karras_sigmas(o.steps, models.sigma_min, models.sigma_max)
    vrs = VRS(o.vrs_steps, o.vrs_repeats) if o.vrs_steps > 0 else None
    elev = torch.deg2rad(torch.as_tensor(np.asarray(submit.cameras.elevation_deg, dtype=np.float64))).float()
    az = np.asarray(submit.cameras.azimuth_deg, dtype=np.float64)
    az_rel = torch.deg2rad(torch.as_tensor((az - az[0]) % 360.0)).float()

    t0 = time.perf_counter()
    report.progress("encoding", 0, 1, "encoding the turntable")
    tt_images = rgba_to_tensor(submit.turntable)  # [V or 1, 3, H, W]
    with torch.no_grad():
        tt_lat = ae.encode(tt_images.to(device)).float().cpu()  # [V or 1, C, h, w]
        ref_images = ref_lat = None
        if submit.mode == "video":
            ref_images = rgba_to_tensor(submit.reference)
            ref_lat = ae.encode(ref_images.to(device)).float().cpu()
    report.preview("turntable", np.ascontiguousarray(submit.turntable))
    timings["encode_s"] = time.perf_counter() - t0

    def noise(*shape):
        return torch.randn(*shape, C, h, w, generator=gen) * float(sigmas[0])

    def progress(stage, label):
        def on_step(i, n, x0):
            report.progress(stage, i + 1, n, f"{label}: step {i + 1} of {n}")
        return on_step

    with _guidance(models, o.guidance):
        # Row 0 (image mode: generated by the multi-view model from the one reference image).
        t0 = time.perf_counter()
        if submit.mode == "image":
            row_known = torch.zeros(1, V, dtype=torch.bool)
            row_known[0, 0] = True
            values = torch.zeros(1, V, C, h, w)
            values[0, 0] = tt_lat[0]
            cond = models.multiview_cond(tt_lat[0], elev, az_rel, image=tt_images[0])
            row0 = sample_sequences(models.multiview, noise(1, V), sigmas, conds=[cond], known_mask=row_known,
                                    known_values=values, vrs=vrs, generator=gen, cancel=cancel,
                                    on_step=progress("turntable", "generating the turntable"))[0]
            row0_images = _decode(models, row0)
            report.preview("turntable", tensor_to_rgb(row0_images))
        else:
            row0, row0_images = tt_lat, tt_images
        # Column 0: the reference motion (generated by the video model from the front view).
        if ref_lat is not None:
            col0, col0_images = ref_lat.clone(), ref_images.clone()
            col0[0], col0_images[0] = row0[0], row0_images[0]
        else:
            col_known = torch.zeros(1, F, dtype=torch.bool)
            col_known[0, 0] = True
            values = torch.zeros(1, F, C, h, w)
            values[0, 0] = row0[0]
            cond = models.video_cond(row0[0], image=row0_images[0])
            col0 = sample_sequences(models.video, noise(1, F), sigmas, conds=[cond], known_mask=col_known,
                                    known_values=values, vrs=vrs, generator=gen, cancel=cancel,
                                    on_step=progress("reference", "generating the reference motion"))[0]
            col0_images = _decode(models, col0)
        report.preview("reference", tensor_to_rgb(col0_images))
        timings["reference_s"] = time.perf_counter() - t0

        # The composed matrix.
        t0 = time.perf_counter()
        known_mask = torch.zeros(V, F, dtype=torch.bool)
        known_mask[0, :] = True
        known_mask[:, 0] = True
        values = torch.zeros(V, F, C, h, w)
        values[:, 0] = row0
        values[0, :] = col0
        video_conds = [models.video_cond(row0[v], image=row0_images[v]) for v in range(V)]
        mv_conds = [models.multiview_cond(col0[f], elev, az_rel, image=col0_images[f]) for f in range(F)]
        weight = schedule_from_options(o.schedule, **dict(o.schedule_params))
        last_preview = [0.0]

        def on_step(i, n, x0):
            report.progress("sampling", i + 1, n, f"composing the {V}\u00d7{F} matrix: step {i + 1} of {n}")
            now = time.perf_counter()
            if o.previews and (now - last_preview[0] >= PREVIEW_INTERVAL_S or i + 1 == n):
                last_preview[0] = now
                front = _decode(models, x0[:, F // 2].to(torch.float32))  # all views at the middle frame
                report.preview("matrix", thumbnails(tensor_to_rgb(front)))

        latents = sample_matrix(models.video, models.multiview, noise(V, F).to(device), sigmas.to(device),
                                video_conds=video_conds, multiview_conds=mv_conds, weight=weight,
                                combine=o.combine, element=models.element if o.combine == "theorem" else None,
                                vrs=vrs, known=Known(known_mask, values.to(device)), generator=None, on_step=on_step,
                                cancel=cancel)
        timings["sampling_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report.progress("decoding", 0, 1, "decoding the matrix")
    decoded = _decode(models, latents.reshape(V * F, C, h, w).float(), chunk=F)  # one row (a video) per chunk
    images = tensor_to_rgb(decoded).reshape(V, F, *decoded.shape[-2:], 3)
    # Given entries come back exactly as given, not through the autoencoder.
    images[:, 0] = submit.turntable[..., :3] if submit.mode != "image" else images[:, 0]
    if submit.mode == "video":
        images[0, 1:] = submit.reference[1:, ..., :3]
    timings["decode_s"] = time.perf_counter() - t0
    report.preview("matrix", thumbnails(images.reshape(V * F, *images.shape[2:])))
    return StageOne(latents=latents.cpu(), images=images, timings=timings)


# ----------------------------------------------------------------------------------------- the job


def frame_times(frames: int) -> np.ndarray:
    """Normalised times in [0, 1] of the F generated frames (frame 0 = the static mesh)."""
    return np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)


def run_job(submit: Submit, models: ModelSet, report: Reporter | None = None, cancel=None) -> Result:
    """Run a whole job and return its Result (see the module docstring)."""
    from backend.recon import fit as fit_4d

    report = report or NullReporter()
    t_start = time.perf_counter()
    validate_submit(submit, models)
    o = submit.options
    stage = sample_stage_one(submit, models, report, cancel)
    V, F = stage.images.shape[:2]
    timings = dict(stage.timings)

    t0 = time.perf_counter()
    times = frame_times(F)

    def on_fit(iteration, total, loss):
        report.progress("fitting", int(iteration), int(total), f"fitting 4D Gaussians: loss {float(loss):.4f}")

    report.progress("fitting", 0, o.fit_iterations, "fitting 4D Gaussians")
    fit = fit_4d(stage.images, np.asarray(submit.cameras.intrinsics), np.asarray(submit.cameras.world_to_cam), times,
                 iterations=int(o.fit_iterations), on_progress=on_fit, cancel=cancel, seed=int(o.seed),
                 device=models.device)
    timings["fit_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vertices = None
    if submit.vertices is not None and len(submit.vertices):
        report.progress("transfer", 0, 1, "transferring motion to the mesh")
        verts = np.asarray(submit.vertices, dtype=np.float32)
        disp = np.asarray(fit.displacement(verts, times), dtype=np.float32)  # [F, P, 3]
        vertices = verts[None] + disp
    timings["transfer_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    summary = fit.summary
    metrics = {"fit_psnr_mean": summary.get("fit_psnr_mean"), "fit_iterations": summary.get("iterations"),
               "fit_seconds": summary.get("seconds"), "gaussians": fit.num_gaussians}
    metrics = {k: float(v) for k, v in metrics.items() if _is_number(v)}
    colours = np.clip(np.round(fit.colours * 255.0), 0, 255).astype(np.uint8)
    return Result(job_id=submit.job_id, centers=fit.centres, colors=colours, opacities=fit.opacities,
                  scales=fit.scales, rotations=fit.rotations[0], thumbnails=thumbnails(stage.images),
                  frame_times=(np.arange(F) / float(o.fps)).astype(np.float32), metrics=metrics, timings=timings,
                  vertices=vertices)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v))
