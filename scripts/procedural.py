"""Procedural objects and motions for the built-in models' training and evaluation data (pure numpy).

An object is a few primitives (box, cylinder, cone, sphere, capsule, torus) joined into a creature,
figure, plant or stack, with random proportions and a colour (sometimes two) per part. A motion is a
function of the rest vertices and the time t in [0, 1) that an artist would recognise: bend, twist,
taper, squash-and-stretch, hop, sway, wave, spin of a part, limbs swinging. Every motion is at rest at
t = 0 (frame 0 is the static mesh, as in the add-on's turntable).

Everything is a pure function of a seed: ``make_object(rng)`` and ``make_motion(rng, obj)``.
``scripts/make_dataset.py`` turns them into Blender meshes and renders them.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

MOTIONS = ("bend", "twist", "taper", "squash", "hop", "sway", "wave", "spin_part", "swing_limbs")


# --------------------------------------------------------------------------------------------- geometry
@dataclass
class Part:
    """One primitive: vertices [N, 3], faces (lists of vertex indices, local), a role and a joint.

    role: 'body', 'head', 'limb', 'tail', 'top', 'base', 'extra'; pivot [3] and axis [3] describe
    where the part attaches (limbs swing about their pivot, parts spin about their axis).
    """

    verts: np.ndarray
    faces: list
    smooth: bool
    role: str
    pivot: np.ndarray
    axis: np.ndarray
    colors: tuple  # one or two RGB colours
    split_z: float | None = None  # second colour above this height (two-tone part)
    side: int = 0  # -1 / +1 for paired limbs (left/right), used for alternating swings


@dataclass
class ProceduralObject:
    """Joined mesh: verts [N, 3] (rest pose, object space, +Z up, front toward -Y), faces, per-face
    material index into ``colors``, per-face smooth flag, per-vertex part index, and the parts."""

    verts: np.ndarray
    faces: list
    face_material: np.ndarray
    face_smooth: np.ndarray
    vert_part: np.ndarray
    colors: list
    parts: list = field(default_factory=list)
    kind: str = ""


def _revolve(radii: np.ndarray, heights: np.ndarray, segments: int, offset_angle: float = 0.0):
    """Surface of revolution around +Z: ring i has radius radii[i] at height heights[i]. Rings with
    radius 0 collapse to one vertex (poles); open ends get a cap fan. Returns verts [N, 3], faces."""
    verts, faces, rings = [], [], []
    ang = offset_angle + 2 * np.pi * np.arange(segments) / segments
    for r, z in zip(radii, heights):
        if r <= 1e-9:
            rings.append([len(verts)])
            verts.append((0.0, 0.0, z))
        else:
            idx = list(range(len(verts), len(verts) + segments))
            rings.append(idx)
            verts.extend(zip(r * np.cos(ang), r * np.sin(ang), np.full(segments, z)))
    for a, b in zip(rings[:-1], rings[1:]):
        if len(a) == 1 and len(b) == 1:
            continue
        if len(a) == 1:
            faces += [[a[0], b[j], b[(j + 1) % segments]] for j in range(segments)]
        elif len(b) == 1:
            faces += [[a[j], a[(j + 1) % segments], b[0]] for j in range(segments)]
        else:
            faces += [[a[j], a[(j + 1) % segments], b[(j + 1) % segments], b[j]] for j in range(segments)]
    for ring, top in ((rings[0], False), (rings[-1], True)):
        if len(ring) > 1:  # cap
            c = len(verts)
            verts.append((0.0, 0.0, heights[-1] if top else heights[0]))
            faces += [[ring[j], ring[(j + 1) % segments], c] for j in range(segments)]
    return np.asarray(verts, dtype=np.float64), faces


def primitive(kind: str, size: np.ndarray, rng: np.random.Generator):
    """A primitive centred at the origin along +Z with half-extents size = (rx, ry, rz).

    Returns verts [N, 3], faces, smooth flag. Enough rings along Z for bends and waves to look smooth.
    """
    rx, ry, rz = (float(s) for s in size)
    rings = 9
    t = np.linspace(-1.0, 1.0, rings)
    if kind == "box":
        v, f = _revolve(np.full(rings, math.sqrt(2.0)), t, 4, math.pi / 4)
        smooth = False
    elif kind == "cylinder":
        v, f = _revolve(np.ones(rings), t, 16)
        smooth = True
    elif kind == "cone":
        top = float(rng.uniform(0.0, 0.5))
        v, f = _revolve(1.0 - (1.0 - top) * (t + 1) / 2, t, 16)
        smooth = True
    elif kind == "sphere":
        phi = np.linspace(0, np.pi, 11)
        v, f = _revolve(np.sin(phi), -np.cos(phi), 16)
        smooth = True
    elif kind == "capsule":
        c = min(1.0, min(rx, ry) / max(rz, 1e-6))  # hemispherical ends (in units of the half-height)
        th = np.linspace(0.0, np.pi / 2, 5)
        zs = np.concatenate([-1 + c * (1 - np.cos(th)), np.linspace(-1 + c, 1 - c, 5)[1:-1], (1 - c * (1 - np.cos(th)))[::-1]])
        rs = np.concatenate([np.sin(th), np.ones(3), np.sin(th)[::-1]])
        v, f = _revolve(rs, zs, 16)
        smooth = True
    elif kind == "torus":
        R, r = 1.0, float(rng.uniform(0.25, 0.45))
        n_u, n_v = 20, 10
        u = 2 * np.pi * np.arange(n_u) / n_u
        w = 2 * np.pi * np.arange(n_v) / n_v
        uu, ww = np.meshgrid(u, w, indexing="ij")
        v = np.stack([(R + r * np.cos(ww)) * np.cos(uu), (R + r * np.cos(ww)) * np.sin(uu), r * np.sin(ww)], -1)
        v = v.reshape(-1, 3) / (R + r)
        v[:, 2] *= (R + r) / max(r, 1e-6)  # z spans [-1, 1] before scaling
        f = [[i * n_v + j, ((i + 1) % n_u) * n_v + j, ((i + 1) % n_u) * n_v + (j + 1) % n_v, i * n_v + (j + 1) % n_v]
             for i in range(n_u) for j in range(n_v)]
        smooth = True
    else:
        raise ValueError(f"unknown primitive {kind!r}")
    return v * np.array([rx, ry, rz]), f, smooth


def _rotation(axis: np.ndarray, angle) -> np.ndarray:
    """Rotation matrices [..., 3, 3] about a unit axis [3] by angle(s) (Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    angle = np.asarray(angle, dtype=np.float64)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    s, c = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def _align_z_to(direction: np.ndarray) -> np.ndarray:
    """Rotation [3, 3] taking +Z to ``direction``."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, d)
    s = np.linalg.norm(axis)
    if s < 1e-9:
        return np.eye(3) if d[2] > 0 else np.diag([1.0, -1.0, -1.0])
    return _rotation(axis / s, math.atan2(s, float(d @ z)))


def random_color(rng: np.random.Generator) -> tuple:
    """A saturated, mid-value colour: never near white, so silhouettes stay visible on white."""
    h = rng.uniform(0, 1)
    s = rng.uniform(0.3, 0.9)
    v = rng.uniform(0.5, 1.0)  # linear (Blender material colour); never near white
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h, s, v))


def _part(rng, kind, size, center, direction, role, colors, pivot=None, side=0, two_tone=False) -> Part:
    v, f, smooth = primitive(kind, np.asarray(size), rng)
    R = _align_z_to(direction)
    v = v @ R.T + np.asarray(center)
    split = None
    if two_tone and len(colors) > 1:
        split = float(np.asarray(center)[2] + rng.uniform(-0.3, 0.3) * size[2])
    pivot = np.asarray(center if pivot is None else pivot, dtype=np.float64)
    return Part(v, f, smooth, role, pivot, R @ np.array([0.0, 0.0, 1.0]), tuple(colors), split, side)


def _critter(rng, pal) -> list:
    """Four- or two-legged animal: horizontal body, head at the front (-Y), legs, maybe tail/ears."""
    L, W, H = rng.uniform(0.5, 1.0), rng.uniform(0.25, 0.5), rng.uniform(0.2, 0.4)
    leg_len = rng.uniform(0.25, 0.6)
    body_z = leg_len + H * 0.8
    body_kind = rng.choice(["box", "capsule", "sphere", "cylinder"])
    parts = [_part(rng, body_kind, (W, H, L), (0, 0, body_z), (0, 1, 0), "body", pal[0:2], two_tone=rng.random() < 0.3)]
    head_r = rng.uniform(0.18, 0.35)
    head_kind = rng.choice(["sphere", "box", "cone", "capsule"])
    head_c = (0, -L - head_r * 0.6, body_z + H * rng.uniform(0.3, 1.2))
    parts.append(_part(rng, head_kind, (head_r, head_r, head_r * rng.uniform(0.8, 1.4)), head_c,
                       (0, -rng.uniform(0, 1), 1), "head", pal[2:3], pivot=(0, -L * 0.9, body_z)))
    n_legs = int(rng.choice([2, 4, 4, 6]))
    leg_r = rng.uniform(0.05, 0.12)
    ys = np.linspace(-L * 0.7, L * 0.7, n_legs // 2) if n_legs > 2 else np.array([0.0])
    leg_kind = rng.choice(["cylinder", "box", "cone", "capsule"])
    for i, y in enumerate(ys):
        for sx in (-1, 1):
            top = (sx * W * 0.7, y, body_z - H * 0.5)
            parts.append(_part(rng, leg_kind, (leg_r, leg_r, leg_len / 2 + H * 0.25),
                               (top[0], y, (top[2] + 0.0) / 2), (0, 0, 1), "limb", pal[3:4], pivot=top,
                               side=sx * (1 if i % 2 == 0 else -1)))
    if rng.random() < 0.6:
        tl = rng.uniform(0.2, 0.5)
        d = np.array([0, 1, rng.uniform(0.2, 1.2)])
        d /= np.linalg.norm(d)
        root = np.array([0, L * 0.95, body_z + H * 0.3])
        parts.append(_part(rng, rng.choice(["cone", "cylinder", "capsule"]), (0.06, 0.06, tl / 2), root + d * tl / 2, d,
                           "tail", pal[4:5], pivot=root))
    if rng.random() < 0.5:
        for sx in (-1, 1):
            c = np.array(head_c) + np.array([sx * head_r * 0.6, 0, head_r * 1.1])
            parts.append(_part(rng, "cone", (0.06, 0.06, 0.12), c, (sx * 0.3, 0, 1), "extra", pal[2:3], pivot=c))
    return parts


def _figure(rng, pal) -> list:
    """Standing figure: torso, head, two arms, two legs."""
    tw, td, th = rng.uniform(0.2, 0.4), rng.uniform(0.12, 0.25), rng.uniform(0.3, 0.5)
    leg_len = rng.uniform(0.4, 0.8)
    torso_z = leg_len + th
    parts = [_part(rng, rng.choice(["box", "capsule", "cylinder", "cone"]), (tw, td, th), (0, 0, torso_z), (0, 0, 1),
                   "body", pal[0:2], two_tone=rng.random() < 0.4)]
    hr = rng.uniform(0.13, 0.25)
    parts.append(_part(rng, rng.choice(["sphere", "box", "capsule"]), (hr, hr, hr * rng.uniform(0.9, 1.3)),
                       (0, 0, torso_z + th + hr), (0, 0, 1), "head", pal[2:3], pivot=(0, 0, torso_z + th)))
    arm_len = rng.uniform(0.35, 0.7)
    ar = rng.uniform(0.04, 0.09)
    spread = rng.uniform(0.0, 0.8)
    for sx in (-1, 1):
        sh = np.array([sx * (tw + ar), 0, torso_z + th * 0.8])
        d = np.array([sx * spread, 0, -1.0])
        d /= np.linalg.norm(d)
        parts.append(_part(rng, rng.choice(["cylinder", "capsule", "box"]), (ar, ar, arm_len / 2), sh + d * arm_len / 2, d,
                           "limb", pal[3:4], pivot=sh, side=sx))
    lr = rng.uniform(0.05, 0.11)
    for sx in (-1, 1):
        hip = np.array([sx * tw * 0.5, 0, leg_len])
        parts.append(_part(rng, rng.choice(["cylinder", "capsule", "box"]), (lr, lr, leg_len / 2), hip - np.array([0, 0, leg_len / 2]),
                           (0, 0, 1), "limb", pal[4:5], pivot=hip, side=-sx))
    return parts


def _plant(rng, pal) -> list:
    """Trunk/stem with a crown, maybe branches or leaves; or a lamp/mushroom."""
    h = rng.uniform(0.6, 1.4)
    r = rng.uniform(0.06, 0.18)
    parts = [_part(rng, rng.choice(["cylinder", "cone", "box"]), (r, r, h / 2), (0, 0, h / 2), (0, 0, 1), "body", pal[0:1])]
    cr = rng.uniform(0.25, 0.55)
    parts.append(_part(rng, rng.choice(["sphere", "cone", "torus", "box", "capsule"]),
                       (cr, cr * rng.uniform(0.7, 1.3), cr * rng.uniform(0.5, 1.2)), (0, 0, h + cr * 0.5), (0, 0, 1),
                       "top", pal[1:3], pivot=(0, 0, h), two_tone=rng.random() < 0.3))
    for _ in range(int(rng.integers(0, 4))):
        a = rng.uniform(0, 2 * np.pi)
        z = rng.uniform(0.3, 0.8) * h
        d = np.array([np.cos(a), np.sin(a), rng.uniform(0.2, 1.0)])
        d /= np.linalg.norm(d)
        bl = rng.uniform(0.15, 0.4)
        root = np.array([0, 0, z])
        parts.append(_part(rng, rng.choice(["cylinder", "cone", "sphere"]), (0.05, 0.05, bl / 2), root + d * bl / 2, d,
                           "limb", pal[3:4], pivot=root, side=1 if np.cos(a) > 0 else -1))
    if rng.random() < 0.5:
        br = rng.uniform(0.2, 0.45)
        parts.append(_part(rng, rng.choice(["cylinder", "box", "torus"]), (br, br, 0.06), (0, 0, 0.06), (0, 0, 1), "base", pal[4:5]))
    return parts


def _stack(rng, pal) -> list:
    """Two to five primitives stacked and offset: totems, snowmen, towers, robots."""
    n = int(rng.integers(2, 6))
    z = 0.0
    parts = []
    for i in range(n):
        kind = rng.choice(["box", "cylinder", "sphere", "cone", "capsule", "torus"])
        rx = rng.uniform(0.15, 0.5)
        ry = rx * rng.uniform(0.6, 1.4)
        rz = rng.uniform(0.1, 0.35)
        off = rng.normal(0, 0.08, 2)
        c = (off[0], off[1], z + rz)
        d = np.array([rng.normal(0, 0.15), rng.normal(0, 0.15), 1.0])
        parts.append(_part(rng, kind, (rx, ry, rz), c, d, "body" if i == 0 else ("top" if i == n - 1 else "extra"),
                           pal[i % len(pal):i % len(pal) + 1], pivot=(off[0], off[1], z)))
        z += 2 * rz * rng.uniform(0.8, 1.0)
    if rng.random() < 0.5:  # a pair of arms
        zc = parts[min(1, n - 1)].pivot[2] + 0.1
        for sx in (-1, 1):
            root = np.array([sx * 0.4, 0, zc])
            d = np.array([sx, 0, rng.uniform(-0.8, 0.8)])
            d /= np.linalg.norm(d)
            parts.append(_part(rng, rng.choice(["cylinder", "box", "capsule"]), (0.05, 0.05, 0.2), root + d * 0.2, d, "limb",
                               pal[5:6], pivot=root, side=sx))
    return parts


TEMPLATES = {"critter": _critter, "figure": _figure, "plant": _plant, "stack": _stack}


def make_object(rng: np.random.Generator) -> ProceduralObject:
    """A random object (one of TEMPLATES) with per-part colours; front faces -Y, +Z up, centred."""
    kind = str(rng.choice(list(TEMPLATES), p=[0.3, 0.25, 0.2, 0.25]))
    n_colors = int(rng.integers(2, 6))
    base = [random_color(rng) for _ in range(n_colors)]
    pal = [base[int(rng.integers(0, n_colors))] for _ in range(8)]
    pal[0] = base[0]
    parts = TEMPLATES[kind](rng, pal)
    scale = rng.uniform(0.8, 1.25, 3)  # random overall proportions
    scale[1] = scale[0] * rng.uniform(0.8, 1.25)
    colors: list = []
    verts, faces, fmat, fsmooth, vpart = [], [], [], [], []
    offset = 0
    for pi, p in enumerate(parts):
        p.verts = p.verts * scale
        p.pivot = p.pivot * scale
        mats = []
        for c in p.colors:
            if c not in colors:
                colors.append(c)
            mats.append(colors.index(c))
        verts.append(p.verts)
        for f in p.faces:
            faces.append([offset + i for i in f])
            if p.split_z is not None and len(mats) > 1:
                fmat.append(mats[1] if p.verts[f, 2].mean() > p.split_z * scale[2] else mats[0])
            else:
                fmat.append(mats[0])
            fsmooth.append(p.smooth)
        vpart.append(np.full(len(p.verts), pi))
        offset += len(p.verts)
    v = np.concatenate(verts)
    center = 0.5 * (v.min(0) + v.max(0))
    center[2] = v[:, 2].min()  # stands on z = 0 (hops leave the ground)
    v = v - center
    for p in parts:
        p.verts = p.verts - center
        p.pivot = p.pivot - center
    return ProceduralObject(v, faces, np.asarray(fmat), np.asarray(fsmooth), np.concatenate(vpart), colors, parts, kind)


# ---------------------------------------------------------------------------------------------- motion
@dataclass
class Motion:
    """One or two named deformations with parameters; ``apply(obj, t)`` gives the verts at time t."""

    names: tuple
    params: list

    def apply(self, obj: ProceduralObject, t: float) -> np.ndarray:
        v = obj.verts.copy()
        for name, p in zip(self.names, self.params):
            v = _MOTION_FUNCS[name](v, obj, t, p)
        return v


def _wave_t(t: float, p: dict) -> float:
    """Periodic drive in [-1, 1], 0 at t = 0."""
    return math.sin(2 * math.pi * p["cycles"] * t + p.get("phase", 0.0)) - math.sin(p.get("phase", 0.0))


def _height(v):
    z = v[:, 2]
    lo, hi = z.min(), z.max()
    return (z - lo) / max(hi - lo, 1e-6), lo, hi


def _bend(v, obj, t, p):
    _, lo, hi = _height(v)
    H = hi - lo
    ax = p["dir"]  # bend toward this horizontal direction (unit [2])
    d = v[:, 0] * ax[0] + v[:, 1] * ax[1]
    # bend the column of height u*H into an arc (small-angle safe)
    k = p["amp"] * _wave_t(t, p) / max(H, 1e-6)
    if abs(k) < 1e-6:
        return v
    s = (v[:, 2] - lo)
    r = 1.0 / k
    new_d = r - (r - d) * np.cos(k * s)
    new_z = lo + (r - d) * np.sin(k * s)
    out = v.copy()
    out[:, 0] += (new_d - d) * ax[0]
    out[:, 1] += (new_d - d) * ax[1]
    out[:, 2] = new_z
    return out


def _twist(v, obj, t, p):
    u, _, _ = _height(v)
    ang = p["amp"] * _wave_t(t, p) * u
    c, s = np.cos(ang), np.sin(ang)
    out = v.copy()
    out[:, 0] = c * v[:, 0] - s * v[:, 1]
    out[:, 1] = s * v[:, 0] + c * v[:, 1]
    return out


def _taper(v, obj, t, p):
    u, _, _ = _height(v)
    f = 1.0 + p["amp"] * _wave_t(t, p) * (u - 0.5)
    out = v.copy()
    out[:, :2] *= f[:, None]
    return out


def _squash(v, obj, t, p):
    _, lo, _ = _height(v)
    a = 1.0 + p["amp"] * _wave_t(t, p)
    out = v.copy()
    out[:, 2] = lo + (v[:, 2] - lo) * a
    out[:, :2] /= math.sqrt(a)
    return out


def _hop(v, obj, t, p):
    ph = abs(math.sin(math.pi * p["cycles"] * t))
    out = v.copy()
    out[:, 2] += p["amp"] * ph
    return out


def _sway(v, obj, t, p):
    _, lo, _ = _height(v)
    ang = p["amp"] * _wave_t(t, p)
    axis = np.array([p["dir"][1], -p["dir"][0], 0.0])
    R = _rotation(axis, ang)
    pivot = np.array([0.0, 0.0, lo])
    return (v - pivot) @ R.T + pivot


def _wave(v, obj, t, p):
    u, _, _ = _height(v)
    phase = 2 * math.pi * (p["cycles"] * t) - p["k"] * u
    disp = p["amp"] * u * (np.sin(phase) - np.sin(-p["k"] * u))
    out = v.copy()
    out[:, 0] += disp * p["dir"][0]
    out[:, 1] += disp * p["dir"][1]
    return out


def _spin_part(v, obj, t, p):
    part = obj.parts[p["part"]]
    m = obj.vert_part == p["part"]
    ang = p["amp"] * (t if p.get("continuous") else _wave_t(t, p))
    R = _rotation(part.axis if p.get("own_axis", True) else np.array([0.0, 0.0, 1.0]), ang)
    out = v.copy()
    out[m] = (v[m] - part.pivot) @ R.T + part.pivot
    return out


def _swing_limbs(v, obj, t, p):
    out = v.copy()
    for i in p["parts"]:
        part = obj.parts[i]
        m = obj.vert_part == i
        sign = part.side if part.side != 0 else 1
        ang = p["amp"] * sign * _wave_t(t, p)
        axis = np.array(p["axis"])
        R = _rotation(axis, ang)
        out[m] = (v[m] - part.pivot) @ R.T + part.pivot
    return out


_MOTION_FUNCS = {"bend": _bend, "twist": _twist, "taper": _taper, "squash": _squash, "hop": _hop, "sway": _sway,
                 "wave": _wave, "spin_part": _spin_part, "swing_limbs": _swing_limbs}


def _motion_params(name: str, rng: np.random.Generator, obj: ProceduralObject) -> dict | None:
    a = rng.uniform(0, 2 * np.pi)
    direction = (math.cos(a), math.sin(a))
    cycles = float(rng.uniform(0.5, 1.25))
    if name == "bend":
        return {"amp": float(rng.uniform(0.5, 1.2)) * rng.choice([-1, 1]), "dir": direction, "cycles": cycles}
    if name == "twist":
        return {"amp": float(rng.uniform(0.6, 1.6)) * rng.choice([-1, 1]), "cycles": cycles}
    if name == "taper":
        return {"amp": float(rng.uniform(0.4, 0.9)), "cycles": cycles}
    if name == "squash":
        return {"amp": float(rng.uniform(0.15, 0.35)), "cycles": float(rng.uniform(0.75, 1.5))}
    if name == "hop":
        return {"amp": float(rng.uniform(0.2, 0.5)), "cycles": float(rng.choice([1.0, 2.0]))}
    if name == "sway":
        return {"amp": float(rng.uniform(0.2, 0.45)), "dir": direction, "cycles": cycles}
    if name == "wave":
        return {"amp": float(rng.uniform(0.1, 0.25)), "dir": direction, "cycles": cycles, "k": float(rng.uniform(2, 5))}
    if name == "spin_part":
        cands = [i for i, p in enumerate(obj.parts) if p.role in ("head", "top", "tail", "extra", "limb")]
        if not cands:
            return None
        i = int(rng.choice(cands))
        cont = obj.parts[i].role == "top" and rng.random() < 0.5
        return {"part": i, "amp": float(rng.uniform(0.6, 1.5) if not cont else rng.uniform(1.0, 2.0) * np.pi),
                "cycles": cycles, "continuous": cont, "own_axis": obj.parts[i].role != "head"}
    if name == "swing_limbs":
        limbs = [i for i, p in enumerate(obj.parts) if p.role == "limb"]
        if not limbs:
            return None
        axis = (1.0, 0.0, 0.0) if rng.random() < 0.75 else (0.0, 1.0, 0.0)
        return {"parts": limbs, "amp": float(rng.uniform(0.35, 0.8)), "cycles": float(rng.uniform(0.75, 1.5)), "axis": axis}
    raise ValueError(name)


def make_motion(rng: np.random.Generator, obj: ProceduralObject) -> Motion:
    """One motion (70 %) or two combined, chosen to suit the object (limb swings need limbs)."""
    n = 1 if rng.random() < 0.7 else 2
    names, params = [], []
    weights = {"bend": 1.0, "twist": 1.0, "taper": 0.6, "squash": 1.0, "hop": 0.8, "sway": 1.0, "wave": 1.0,
               "spin_part": 1.0, "swing_limbs": 2.0 if any(p.role == "limb" for p in obj.parts) else 0.0}
    pool = list(weights)
    while len(names) < n:
        w = np.array([weights[k] for k in pool])
        name = str(rng.choice(pool, p=w / w.sum()))
        par = _motion_params(name, rng, obj)
        pool.remove(name)
        if par is not None:
            names.append(name)
            params.append(par)
    return Motion(tuple(names), params)


def bounding_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre [3], radius) with the centre at the bounding-box centre, as the add-on normalises."""
    c = 0.5 * (points.min(0) + points.max(0))
    return c, float(np.linalg.norm(points - c, axis=1).max())


def animate(obj: ProceduralObject, motion: Motion, times) -> np.ndarray:
    """Vertices at each time: [F, N, 3]."""
    return np.stack([motion.apply(obj, float(t)) for t in times])
