"""``fit``: 4D Gaussians from a views x frames image matrix with known cameras.

Canonical Gaussians live at frame 0 (time 0, the turntable of the static mesh); a keyframed
deformation graph (``motion.MotionField``) moves them to every other frame. Each step renders all
views of a few frames in one rasteriser call, compares with the images on white (photometric loss
from ``losses.py``; coverage alpha too when the images have it) and regularises the motion (smooth in
time; as-rigid-as-possible where the hull tracking found the graph rigid, free across the joints it
bent; parts that every view saw standing still are held still, ``static.py``). Gaussians are
densified where the screen-space gradient is large and pruned when transparent. The loop stops at the
iteration budget, on a plateau of the loss, at the optional time budget, on cancel (raises
``Cancelled``) or when the loss stops being finite (returns the last good state and reports the step).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np
import torch

from backend.errors import Cancelled, InvalidInput

from .align import align_silhouettes, shifted_intrinsics
from .carve import initial_points, silhouettes, surface_voxels, visual_hull
from .inputs import FitInputs, check_inputs
from .corrections import ImageCorrections, project_shifts, shift_gauge
from .losses import LOSS_NAMES, PhotometricLoss, blur_images, psnr
from .model import Gaussians
from .motion import MotionField, farthest_point_sampling, knn
from .raster import BACKENDS, rasterize, resolve_backend
from .result import Fit4D
from .silhouette import SilhouetteLoss
from .static import change_masks, still_weights
from .track import chamfer, track_hulls

PROGRESS_EVERY = 25


@dataclass
class FitOptions:
    """Every knob of ``fit`` (pass them as keyword arguments)."""

    # fixed iteration budget (early stopping may end sooner). 600: at 64² from 8 views, longer fits overfit the
    # training views (unseen PSNR at 600 / 790 / 1000 iterations: RiggedFigure 28.57 / 28.00 / 27.78,
    # RiggedSimple 34.58 / 34.50, Fox 29.87 / 30.07; docs/benchmarks.md, round 6)
    iterations: int = 600
    time_budget_s: float | None = None  # stop after this many seconds of optimisation
    num_gaussians: int = 2000         # initial count (on the visual hull of frame 0)
    max_gaussians: int = 8000
    num_nodes: int = 192              # deformation-graph nodes
    k_blend: int = 4                  # nodes blended per point
    frames_per_step: int = 2          # frames per step (all views of each); frame 0 is always one of them
    canonical_warmup: float = 0.15    # fraction of the budget fitting frame 0 alone (the canonical scene)
    canonical_lr_after: float = 0.3   # canonical means' learning rate factor once motion is fitted
    loss: str = "auto"                # 'auto' | 'l1+dssim' | 'dssim+lpips'
    lr_means: float = 1e-3
    lr_final_ratio: float = 0.05
    lr_colours: float = 0.02
    lr_opacity: float = 0.05
    lr_scales: float = 0.01
    lr_quats: float = 0.002
    lr_offsets: float = 1e-3          # per-keyframe residual offsets
    # node translations / rotations in the photometric phase; None: 5e-4 / 1e-3 when the motion is
    # tracked (the photometric loss only refines it: at 2e-3 it dragged RiggedFigure's static parts,
    # at 0 AnimatedMorphCube lost 2 dB), else 2e-3 / 4e-3. Both 0: the tracked field is kept as it is.
    lr_motion: float | None = None
    lr_rotation: float | None = None
    w_alpha: float = 0.5              # coverage loss when the images carry alpha
    w_outside: float = 0.5            # silhouette: projected centres outside the silhouette
    w_coverage: float = 0.5           # silhouette: silhouette pixels far from every centre
    blur_px: float = 2.0              # coarse-to-fine: loss on images blurred by this sigma at first
    blur_until: float = 0.3           # ... decaying to none at this fraction of the budget
    # ARAP of the node graph in the photometric phase, on the edges the hull tracking left rigid:
    # after tracking, every edge's weight is scaled by exp(-(strain / arap_release)^2) (strain: how far
    # the tracked motion bends it), so joints between parts that move differently stop coupling them.
    # Plain ARAP (arap_release None) dragged RiggedFigure's still torso with its arms (motion ratio
    # 0.46; 0.37 without ARAP, which cost RiggedSimple 0.6 dB; 0.34 released: docs/benchmarks.md).
    w_arap: float = 0.2
    arap_release: float | None = 0.2
    w_smooth: float = 0.001
    w_residual: float = 0.1           # L2 on the per-Gaussian residual offsets (over the squared node spacing)
    w_hull: float = 1.0               # chamfer between moved Gaussians and each frame's visual hull
    track: bool = True                # initialise the motion by tracking the per-frame visual hulls
    track_iterations: int = 10        # Gauss-Newton iterations per frame when tracking
    track_rigidity: float = 0.003     # ARAP weight of the tracking (against the hull distances)
    track_from_rest: bool = False     # also start each frame's tracking from the rest pose; keep the closer
    # still prior (static.py): points whose frame-0 projection is unchanged at frame f in every view
    w_still: float = 100.0            # fit: squared displacement of still Gaussians (over the squared node spacing)
    still_threshold: float = 0.1      # colour change (any channel, 0..1) that counts as change
    still_dilation: int = 2           # pixels around a change that count as changed too
    still_search: float = 4.0         # px: each frame is aligned to frame 0 within this before comparing (0: as is)
    hull_tolerance: int = 0           # views allowed to disagree when carving a frame's hull
    max_hull_points: int = 3000       # surface voxels per hull (the carving grid is coarsened to fit)
    progressive: bool = False         # add frames one at a time, each from the previous frame's pose
    grow_until: float = 0.4           # ... all frames active by this fraction of the budget
    densify_every: int = 100
    densify_from: int = 100
    densify_until: float = 0.6        # fraction of the iteration budget
    grad_threshold: float = 2e-4
    prune_opacity: float = 0.02
    corrections: bool = True          # per training image sub-pixel shift + colour gain/bias (fit only)
    lr_shift: float = 0.05            # pixels per step (Adam)
    lr_colour: float = 0.01           # gain (log) and bias per step (Adam)
    w_shift_prior: float = 1e-4       # pull of the shifts toward none (squared shift over 1 px)
    w_colour_prior: float = 1e-4      # pull of gains and biases toward the identity (over 0.05)
    align_silhouettes: bool = True    # with corrections: estimate the shifts from the silhouettes before carving
    early_stop_patience: int = 4      # windows of 50 iterations without 0.2 % improvement
    carve_resolution: int = 48
    seed: int = 0
    device: str = "cpu"
    backend: str = "auto"
    on_progress: Callable[[int, int, float], Any] | None = None
    cancel: Any = None                # anything with is_set()

    @property
    def motion_frozen(self) -> bool:
        """Both motion learning rates 0: the tracked motion field (node poses, blend radii) is kept as it is."""
        return self.lr_motion == 0 and self.lr_rotation == 0

    def check(self) -> None:
        if not isinstance(self.iterations, (int, np.integer)) or self.iterations < 1:
            raise InvalidInput("iterations", f"must be an integer of at least 1, got {self.iterations!r}")
        for name in ("num_gaussians", "max_gaussians", "num_nodes", "k_blend", "frames_per_step"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidInput(name, f"must be an integer of at least 1, got {value!r}")
        if self.max_gaussians < self.num_gaussians:
            raise InvalidInput("max_gaussians", f"must be at least num_gaussians ({self.num_gaussians}), got {self.max_gaussians}")
        for name in ("lr_shift", "lr_colour", "w_shift_prior", "w_colour_prior", "lr_motion", "lr_rotation",
                     "w_still", "still_threshold", "still_search"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.floating)) or not math.isfinite(value) or value < 0:
                raise InvalidInput(name, f"must be a finite number of at least 0, got {value!r}")
        if self.arap_release is not None and (not isinstance(self.arap_release, (int, float, np.floating))
                                              or not math.isfinite(self.arap_release) or self.arap_release <= 0):
            raise InvalidInput("arap_release", f"must be a positive strain or None, got {self.arap_release!r}")
        if self.still_search > 8:
            raise InvalidInput("still_search", f"must be at most 8 px (the search grows with its square), got {self.still_search!r}")
        if not isinstance(self.still_dilation, (int, np.integer)) or self.still_dilation < 0:
            raise InvalidInput("still_dilation", f"must be an integer of at least 0, got {self.still_dilation!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise InvalidInput("time_budget_s", f"must be positive seconds or None, got {self.time_budget_s!r}")
        if self.loss not in LOSS_NAMES:
            raise InvalidInput("loss", f"must be one of {LOSS_NAMES}, got {self.loss!r}")
        if self.backend not in BACKENDS:
            raise InvalidInput("backend", f"must be one of {BACKENDS}, got {self.backend!r}")
        try:
            torch.device(self.device)
        except Exception:
            raise InvalidInput("device", f"not a torch device: {self.device!r}") from None
        if self.cancel is not None and not callable(getattr(self.cancel, "is_set", None)):
            raise InvalidInput("cancel", "must have an is_set() method (e.g. threading.Event)")
        if self.on_progress is not None and not callable(self.on_progress):
            raise InvalidInput("on_progress", "must be callable(iteration, total, loss)")


def make_options(options: dict) -> FitOptions:
    known = {f.name for f in fields(FitOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidInput(unknown[0], f"unknown fit option; known options: {', '.join(sorted(known))}")
    opts = FitOptions(**options)
    if opts.lr_motion is None:
        opts.lr_motion = 5e-4 if opts.track else 2e-3
    if opts.lr_rotation is None:
        opts.lr_rotation = 1e-3 if opts.track else 4e-3
    opts.check()
    return opts


class _Snapshot:
    """The last parameters known to be finite."""

    def __init__(self):
        self.state = None
        self.step = -1

    def save(self, gaussians: Gaussians, motion: MotionField, corrections: ImageCorrections, step: int) -> None:
        self.state = (copy.deepcopy(gaussians.state_dict()), copy.deepcopy(motion.state_dict()),
                      copy.deepcopy(corrections.state_dict()))
        self.step = step

    def restore(self, gaussians: Gaussians, motion: MotionField, corrections: ImageCorrections) -> None:
        g, m, c = self.state
        for name, value in g.items():
            setattr(gaussians, name, torch.nn.Parameter(value))
        motion.load_state_dict(m)
        corrections.load_state_dict(c)


def _finite(*modules) -> bool:
    return all(torch.isfinite(p).all() for m in modules for p in m.parameters())


def fit(images, intrinsics, world_to_cam, times, **options) -> Fit4D:
    """Fit 4D Gaussians to ``images`` uint8 [V, F, H, W, 3|4] (RGB on white; alpha = coverage when
    given) seen by cameras ``intrinsics`` [V, 3, 3] and OpenCV ``world_to_cam`` [V, 4, 4] at
    ``times`` [F] in [0, 1] (increasing; frame 0 is canonical). Options: ``FitOptions``."""
    opts = make_options(options)
    data = check_inputs(images, intrinsics, world_to_cam, times)
    return _Fitter(data, opts).run()


class _Fitter:
    def __init__(self, data: FitInputs, opts: FitOptions):
        self.data, self.opts = data, opts
        self.device = torch.device(opts.device)
        self.backend = resolve_backend(opts.backend, self.device)
        torch.manual_seed(opts.seed)
        self.rng = np.random.default_rng(opts.seed)
        V, F, H, W = data.shape
        dev = self.device
        self.V, self.F, self.H, self.W = V, F, H, W
        self.target = torch.from_numpy(data.rgb).to(dev).permute(1, 0, 2, 3, 4).contiguous()  # [F, V, H, W, 3]
        self.alpha = None if data.alpha is None else torch.from_numpy(data.alpha).to(dev).permute(1, 0, 2, 3)[..., None]
        self.K = torch.tensor(data.K, dtype=torch.float32, device=dev)
        self.w2c = torch.tensor(data.w2c, dtype=torch.float32, device=dev)
        self.loss_fn = PhotometricLoss(opts.loss, dev)
        # gsplat gives no gradient to the intrinsics: there the shift resamples the rendered image
        self.shift_mode = "intrinsics" if self.backend == "torch" else "resample"
        masks = silhouettes(data.rgb, data.alpha)  # [V, F, H, W]
        self.masks = masks
        self.silhouette = None
        if opts.w_outside > 0 or opts.w_coverage > 0:
            self.silhouette = SilhouetteLoss(masks.transpose(1, 0, 2, 3), dev, seed=opts.seed)

    # -- initialisation ------------------------------------------------------------------------
    def _init_scene(self) -> tuple[Gaussians, MotionField]:
        d, o = self.data, self.opts
        # each image's shift, estimated from the silhouettes, so that carving sees consistent ones
        self.shift0 = np.zeros((self.F, self.V, 2))
        if o.corrections and o.align_silhouettes and self.V >= 3:
            for f in range(self.F):
                self.shift0[f] = align_silhouettes(self.masks[:, f], d.K, d.w2c, resolution=o.carve_resolution)
            # carve with the shifts the corrections will start from (what the scene cannot explain)
            self.shift0 = project_shifts(torch.as_tensor(self.shift0), shift_gauge(d.K, d.w2c)).numpy()
        self.changed = None
        if o.w_still > 0 and self.F > 1:
            self.changed = torch.from_numpy(change_masks(d.rgb, o.still_threshold, o.still_dilation, o.still_search,
                                                         K=d.K, w2c=d.w2c)).to(self.device)
        masks0 = self.masks[:, 0]
        pts, cols, step = initial_points(d.rgb[:, 0], masks0, self._carve_K(0), d.w2c, o.num_gaussians, self.rng,
                                         resolution=o.carve_resolution)
        pts_t = torch.tensor(pts, dtype=torch.float32)
        _, d2 = knn(pts_t, pts_t, 4)
        spacing = d2[:, 1:].clamp_min(1e-10).sqrt().mean(1, keepdim=True).clamp(step * 0.25, step * 2)
        g = Gaussians(pts_t, torch.tensor(cols, dtype=torch.float32), spacing.expand(-1, 3) * 0.7,
                      num_keys=self.F).to(self.device)
        nodes = pts_t[farthest_point_sampling(pts_t, o.num_nodes, seed=o.seed)]
        motion = MotionField(nodes, torch.tensor(d.times), k_blend=o.k_blend).to(self.device)
        motion.nodes.requires_grad_(False)
        if o.motion_frozen:
            motion.trans.requires_grad_(False)
            motion.rotvec.requires_grad_(False)
            motion.log_radius.requires_grad_(False)
        self.hulls = None
        if o.w_hull > 0 or o.track:
            # one grid for every frame (unmoved parts then match exactly), coarse enough that the
            # first frame's hull surface has at most ``max_hull_points`` voxels
            self.hull_res = o.carve_resolution
            count = self._hull(0).shape[0]
            if count > o.max_hull_points:
                self.hull_res = max(12, int(o.carve_resolution * math.sqrt(o.max_hull_points / count)))
            self.hulls = [self._hull(f) for f in range(self.F)]
        if o.track and self.F > 1:
            # all surface voxels of every hull: they lie on one grid, so unmoved parts match exactly
            track_hulls(motion, self.hulls[0], self.hulls,
                        iterations=o.track_iterations, rigidity=o.track_rigidity, from_rest=o.track_from_rest,
                        cancel=None if o.cancel is None else o.cancel.is_set)
            if o.arap_release is not None:
                motion.release_strained_edges(o.arap_release)
        return g, motion

    def _still(self, points: torch.Tensor) -> torch.Tensor | None:
        """[F, P]: 1 where the images saw canonical points [P, 3] stand still at each frame (None: prior off)."""
        if self.changed is None:
            return None
        w = still_weights(points, self.changed, self.data.K, self.data.w2c)
        w[0] = 0  # frame 0 is the canonical frame itself
        return w

    def _carve_K(self, f: int) -> np.ndarray:
        """Intrinsics [V, 3, 3] of frame f's images as the silhouette alignment found them."""
        return shifted_intrinsics(self.data.K, self.shift0[f])

    def _subsample(self, n: int, k: int) -> torch.Tensor:
        return torch.as_tensor(np.sort(self.rng.choice(n, min(n, k), replace=False)), device=self.device)

    def _hull(self, f: int) -> torch.Tensor:
        """Surface points [Q, 3] of frame f's visual hull."""
        d, o = self.data, self.opts
        masks = self.masks[:, f]
        for tol in range(o.hull_tolerance, self.V):
            occ, step = visual_hull(masks, self._carve_K(f), d.w2c, resolution=getattr(self, "hull_res", o.carve_resolution),
                                    tolerance=tol, dilation=0)
            if occ.shape[0] >= 16:
                break
        surf = surface_voxels(occ, step) if occ.shape[0] >= 16 else occ
        return torch.tensor(surf.reshape(-1, 3), dtype=torch.float32, device=self.device)

    def _optimizer(self, g: Gaussians, m: MotionField, c: ImageCorrections) -> torch.optim.Optimizer:
        o = self.opts
        extra = []
        if o.corrections:
            extra = [{"params": [c.raw_shift], "lr": o.lr_shift, "name": "shift"},
                     {"params": [c.raw_log_gain, c.raw_bias], "lr": o.lr_colour, "name": "colour"}]
        return torch.optim.Adam(
            extra + [
                {"params": [g.means], "lr": o.lr_means, "name": "means"},
                {"params": [g.offsets], "lr": o.lr_offsets, "name": "offsets"},
                {"params": [g.quats], "lr": o.lr_quats, "name": "quats"},
                {"params": [g.log_scales], "lr": o.lr_scales, "name": "scales"},
                {"params": [g.opacity_logits], "lr": o.lr_opacity, "name": "opacity"},
                {"params": [g.colour_logits], "lr": o.lr_colours, "name": "colours"},
                {"params": [m.trans], "lr": o.lr_motion, "name": "motion"},
                {"params": [m.rotvec], "lr": o.lr_rotation, "name": "motion"},
                {"params": [m.log_radius], "lr": 0.01, "name": "radius"},
            ],
            eps=1e-15,
        )

    # -- one step ---------------------------------------------------------------------------------
    def _intrinsics(self, c: ImageCorrections, frames: torch.Tensor) -> torch.Tensor:
        """Intrinsics of the training images of ``frames`` [Fb]: [Fb, V, 3, 3], each image's principal
        point moved by its learned shift when the shift acts on the projection."""
        if self.opts.corrections and self.shift_mode == "intrinsics":
            return c.intrinsics(self.K, frames)
        return self.K[None].expand(frames.shape[0], -1, -1, -1)

    def _render(self, g: Gaussians, m: MotionField, c: ImageCorrections, frames: torch.Tensor, idx: torch.Tensor,
                retain: bool = False):
        """Renders of the training images of ``frames`` as each image's corrections see them:
        (raster output, rgb [Fb, V, H, W, 3], moved means [Fb, N, 3], intrinsics [Fb, V, 3, 3])."""
        means, quats = m.warp(g.means, g.quats, frames=frames, idx=idx)
        means = means + g.key_offsets()[frames]
        Fb = frames.shape[0]
        K = self._intrinsics(c, frames)
        out = rasterize(means, quats, g.scales, g.opacities, g.colours,
                        self.w2c[None].expand(Fb, -1, -1, -1), K,
                        self.W, self.H, backend=self.backend, retain_grad=retain)
        rgb = out.rgb
        if self.opts.corrections:
            if self.shift_mode == "resample":
                rgb = c.resample(rgb, frames)
            rgb = c.colour(rgb, frames)
        return out, rgb, means, K

    def _project(self, means: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
        """Pixel positions [Fb, V, N, 2] of points [Fb, N, 3] in every training view (intrinsics [Fb, V, 3, 3])."""
        cam = torch.einsum("vij,fnj->fvni", self.w2c[:, :3, :3], means) + self.w2c[None, :, None, :3, 3]
        z = cam[..., 2].clamp_min(1e-3)
        K = Ks[:, :, None]
        return torch.stack([K[..., 0, 0] * cam[..., 0] / z + K[..., 0, 2], K[..., 1, 1] * cam[..., 1] / z + K[..., 1, 2]], -1)

    def _loss(self, out, rgb, means, Ks, frames: torch.Tensor, g: Gaussians, m: MotionField, c: ImageCorrections,
              frac: float, active: int, still: torch.Tensor | None = None):
        pred = rgb.reshape(-1, self.H, self.W, 3)
        tgt = self.target[frames].reshape(-1, self.H, self.W, 3)
        o = self.opts
        sigma = o.blur_px * max(0.0, 1.0 - frac / o.blur_until) if o.blur_until > 0 else 0.0
        sigma = round(sigma * 4) / 4  # a few distinct blurs (their matrices are cached)
        if sigma > 0.3:
            pred, tgt = blur_images(pred, sigma), blur_images(tgt, sigma)
        terms = self.loss_fn(pred, tgt)
        total = terms.total
        if self.alpha is not None and self.opts.w_alpha > 0:
            total = total + self.opts.w_alpha * (out.alpha - self.alpha[frames]).abs().mean()
        if self.silhouette is not None:
            outside, coverage = self.silhouette(self._project(means, Ks), frames, g.opacities)
            total = total + o.w_outside * outside + o.w_coverage * coverage
        if o.w_hull > 0 and self.hulls is not None:
            pick = self._subsample(means.shape[1], 800)
            hull = 0.0
            for i, f in enumerate(frames.tolist()):
                target = self.hulls[f]
                if target.shape[0] > 0:
                    hull = hull + chamfer(means[i, pick], target[self._subsample(target.shape[0], 1500)])
            total = total + o.w_hull * hull / frames.shape[0]
        if o.w_arap > 0 and not o.motion_frozen:
            total = total + o.w_arap * m.arap_loss(active)
        if o.w_still > 0 and still is not None:
            # the motion field's own displacement (what the mesh gets), not the per-frame residuals
            moved = ((means - g.key_offsets()[frames] - g.means[None]) ** 2).sum(-1)  # [Fb, N]
            total = total + o.w_still * (still[frames] * moved).mean() / m.edge_scale
        if o.w_residual > 0 and g.offsets.numel():
            total = total + o.w_residual * (g.offsets**2).sum(-1).mean() / m.edge_scale
        if o.w_smooth > 0 and not o.motion_frozen:
            total = total + o.w_smooth * m.smoothness_loss(active)
        if o.corrections and (o.w_shift_prior > 0 or o.w_colour_prior > 0):
            total = total + c.regulariser(o.w_shift_prior, o.w_colour_prior)
        return total

    def _pick_frames(self, active: int, warmup: bool) -> torch.Tensor:
        """Frame 0 (the canonical frame: it has no motion of its own, so it must anchor the canonical
        Gaussians) plus ``frames_per_step - 1`` others: the newest one while frames are still being
        added, otherwise a shuffled cycle through all of them."""
        fb = min(self.opts.frames_per_step, active)
        if warmup or active == 1 or fb == 1:
            return torch.tensor([0], device=self.device)
        if active < self.F:
            rest = (1 + self.rng.permutation(active - 2)[: fb - 2]).tolist()
            chosen = [0, active - 1] + rest
        else:
            if len(self._order) < fb - 1:
                self._order += [int(i) for i in 1 + self.rng.permutation(self.F - 1) if i not in self._order]
            chosen, self._order = [0] + self._order[: fb - 1], self._order[fb - 1 :]
        return torch.tensor(sorted(set(chosen)), device=self.device)

    def _active_frames(self, frac: float) -> int:
        """Frames are added one at a time (each starting from the previous frame's pose) until
        ``grow_until`` of the budget: consecutive poses are close, so each new frame starts inside
        the basin of its solution."""
        o = self.opts
        if not o.progressive or self.F <= 2 or o.grow_until <= 0:
            return self.F
        return min(self.F, 2 + int(frac / o.grow_until * (self.F - 1)))

    @torch.no_grad()
    def _densify(self, g: Gaussians, opt, grad_sum: torch.Tensor, grad_cnt: torch.Tensor, prune_only: bool) -> int:
        o = self.opts
        N = len(g)
        avg = grad_sum / grad_cnt.clamp_min(1)
        keep = g.opacities > o.prune_opacity
        big = g.scales.max(-1).values > 0.2  # in the unit sphere: a fifth of the radius is huge
        keep &= ~big
        grow = torch.zeros(N, dtype=torch.bool, device=g.means.device)
        if not prune_only:
            grow = (avg > o.grad_threshold) & keep
            room = o.max_gaussians - int(keep.sum())
            if room <= 0:
                grow[:] = False
            elif int(grow.sum()) > room:
                top = torch.topk(torch.where(grow, avg, torch.zeros_like(avg)), room).indices
                grow = torch.zeros_like(grow)
                grow[top] = True
        if keep.all() and not grow.any():
            return N
        kept = torch.nonzero(keep).squeeze(1)
        extra = torch.nonzero(grow).squeeze(1)
        source = torch.cat([kept, extra])
        means = g.means.data[source].clone()
        log_scales = g.log_scales.data[source].clone()
        if extra.numel():
            # split both copies: move each along the Gaussian by one standard deviation, shrink
            from .geometry import quat_to_rotmat

            n_k = kept.numel()
            pos_in_kept = torch.full((N,), -1, dtype=torch.long, device=g.means.device)
            pos_in_kept[kept] = torch.arange(n_k, device=g.means.device)
            R = quat_to_rotmat(g.quats.data[extra])
            s = g.scales[extra]
            offset = (R @ (torch.randn_like(s) * s)[..., None])[..., 0]
            a = pos_in_kept[extra]
            means[a] = g.means.data[extra] + offset
            means[n_k:] = g.means.data[extra] - offset
            shrink = math.log(1.6)
            log_scales[a] -= shrink
            log_scales[n_k:] -= shrink
        g.rebuild(source, opt, means=means, log_scales=log_scales)
        return len(g)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> Fit4D:
        o = self.opts
        t_start = time.perf_counter()
        g, m = self._init_scene()
        t_loop = time.perf_counter()
        # the schedule (learning-rate decay, warm-up, densification window) spans the time left
        # after the initialisation, so a slow start does not skip the early phases
        loop_budget = None if o.time_budget_s is None else max(o.time_budget_s - (t_loop - t_start), 1e-3)
        c = ImageCorrections(self.F, self.V).to(self.device)
        c.set_cameras(self.K, self.w2c)
        with torch.no_grad():
            c.raw_shift.copy_(torch.as_tensor(self.shift0, dtype=torch.float32))
        opt = self._optimizer(g, m, c)
        idx = m.neighbours(g.means)
        still = self._still(g.means)
        snapshot = _Snapshot()
        snapshot.save(g, m, c, 0)
        self._order: list[int] = []
        base_lr = {id(gr): gr["lr"] for gr in opt.param_groups}
        grad_sum = torch.zeros(len(g), device=self.device)
        grad_cnt = torch.zeros(len(g), device=self.device)
        ema, best, stale, history = None, math.inf, 0, []
        stop_reason, diverged_at, it, active = "iterations", None, 0, 0
        for it in range(1, o.iterations + 1):
            if o.cancel is not None and o.cancel.is_set():
                raise Cancelled(f"fit cancelled at iteration {it - 1} of {o.iterations}")
            # progress through the budget: iterations or time, whichever is further along
            frac = (it - 1) / max(o.iterations - 1, 1)
            if loop_budget is not None:
                frac = max(frac, (time.perf_counter() - t_loop) / loop_budget)
            frac = min(frac, 1.0)
            decay = o.lr_final_ratio ** frac
            warmup = frac < o.canonical_warmup and self.F > 1
            for gr in opt.param_groups:
                if gr["name"] == "means":
                    gr["lr"] = base_lr[id(gr)] * decay * (1.0 if warmup else o.canonical_lr_after)
                elif gr["name"] in ("motion", "offsets", "shift", "colour"):
                    gr["lr"] = base_lr[id(gr)] * decay
            now_active = self._active_frames(frac)
            if now_active > active:
                if active > 0:  # frames added while fitting start from the pose of the previous one
                    with torch.no_grad():  # (the first activation keeps the tracked initial motion)
                        for k in range(max(active, 2), now_active):
                            m.trans[k - 1] = m.trans[k - 2]
                            m.rotvec[k - 1] = m.rotvec[k - 2]
                active = now_active
            frames = self._pick_frames(active, warmup)
            out, rgb, means_t, Ks = self._render(g, m, c, frames, idx, retain=True)
            loss = self._loss(out, rgb, means_t, Ks, frames, g, m, c, frac, active, still)
            if not torch.isfinite(loss):
                diverged_at, stop_reason = it, "diverged"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not _finite(g, m, c):
                diverged_at, stop_reason = it, "diverged"
                break
            value = float(loss.detach())
            if it % 10 == 0:
                snapshot.save(g, m, c, it)
            with torch.no_grad():
                if out.proj.means2d.grad is not None:
                    gr2 = out.proj.means2d.grad.clone()
                    gr2[..., 0] *= self.W / 2 * gr2.shape[0] * gr2.shape[1]
                    gr2[..., 1] *= self.H / 2 * gr2.shape[0] * gr2.shape[1]
                    vis = out.proj.visible.reshape(-1, len(g))
                    grad_sum += (gr2.norm(dim=-1).reshape(-1, len(g)) * vis).sum(0)
                    grad_cnt += vis.sum(0)
            densifying = frac <= o.densify_until
            if densifying and it >= o.densify_from and it % o.densify_every == 0:
                self._densify(g, opt, grad_sum, grad_cnt, prune_only=False)
                idx = m.neighbours(g.means)
                still = self._still(g.means)
                grad_sum = torch.zeros(len(g), device=self.device)
                grad_cnt = torch.zeros(len(g), device=self.device)
            elif it % 50 == 0:
                idx = m.neighbours(g.means)
                still = self._still(g.means)
            ema = value if ema is None else 0.9 * ema + 0.1 * value
            if it % PROGRESS_EVERY == 0 or it == o.iterations:
                history.append((it, value))
                if o.on_progress is not None:
                    o.on_progress(it, o.iterations, value)
            if it % 50 == 0 and not densifying and active == self.F:
                if ema < best * (1 - 2e-3):
                    best, stale = ema, 0
                else:
                    stale += 1
                    if stale >= o.early_stop_patience:
                        stop_reason = "plateau"
                        break
            if o.time_budget_s is not None and time.perf_counter() - t_start > o.time_budget_s:
                stop_reason = "time budget"
                break
        if diverged_at is not None:
            snapshot.restore(g, m, c)
        g.requires_grad_(False)
        m.requires_grad_(False)
        elapsed = time.perf_counter() - t_start
        result = Fit4D(g, m, times=self.data.times, backend=self.backend)
        view_psnr = self._view_psnr(result)
        result.summary = {
            "loss": self.loss_fn.name,
            "loss_fallback_reason": self.loss_fn.fallback_reason or None,
            "backend": self.backend,
            "iterations": it if diverged_at is None else snapshot.step,
            "iteration_budget": o.iterations,
            "stop_reason": stop_reason,
            "diverged_at": diverged_at,
            "seconds": round(elapsed, 3),
            "num_gaussians": len(g),
            "num_nodes": m.num_nodes,
            "views": self.V,
            "frames": self.F,
            "height": self.H,
            "width": self.W,
            "used_alpha": self.alpha is not None,
            "corrections": None if not o.corrections else {"shift_mode": self.shift_mode, **c.report()},
            # share of (Gaussian, frame > 0) pairs the still prior held (None: off or one frame)
            "still_fraction": None if still is None else round(float(still[1:].mean()), 4),
            "fit_psnr_per_view": [round(float(p), 3) for p in view_psnr],
            "fit_psnr_mean": round(float(np.mean(view_psnr)), 3),
            "loss_history": [(int(i), round(float(v), 6)) for i, v in history],
        }
        return result

    @torch.no_grad()
    def _view_psnr(self, result: Fit4D) -> np.ndarray:
        """PSNR of the fit on each training view, over all frames: [V]."""
        out = np.zeros(self.V)
        for f in range(self.F):
            pred = result.render_frames(self.K, self.w2c, [f], self.H, self.W)[0]  # [V, H, W, 3]
            out += psnr(pred, self.target[f]).cpu().numpy()
        return out / self.F
