"""Write the add-on's sample mesh: a small potted flower (procedural, made for dsquare, CC0).

    python scripts/make_sample_mesh.py            # -> blender_addon/samples/flower.obj + flower.mtl

Pure numpy, deterministic. Coordinates are Blender's (+Z up, front toward -Y), in metres: a pot
at the origin, a curved stem, two leaves and a flower head of eight petals around a disc, about
1.4 m tall. Five materials (pot, stem, leaf, petal, centre) carry base colours in the .mtl.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "blender_addon" / "samples"

MATERIALS = {
    "Pot": (0.72, 0.33, 0.18),
    "Stem": (0.20, 0.50, 0.15),
    "Leaf": (0.30, 0.65, 0.20),
    "Petal": (0.95, 0.45, 0.65),
    "Centre": (0.98, 0.80, 0.15),
}


class Builder:
    def __init__(self):
        self.verts: list[np.ndarray] = []
        self.faces: list[tuple[str, list[int]]] = []  # (material, 0-based indices)
        self.count = 0

    def add(self, verts: np.ndarray, faces: list[list[int]], material: str) -> None:
        self.verts.append(np.asarray(verts, dtype=np.float64))
        for f in faces:
            self.faces.append((material, [self.count + i for i in f]))
        self.count += len(verts)


def tube(path: np.ndarray, radii: np.ndarray, sides: int, cap_top: bool = True, cap_bottom: bool = True):
    """Rings of ``sides`` vertices around a polyline ``path`` [R, 3]; quads between rings, fan caps."""
    rings = []
    for i, (p, r) in enumerate(zip(path, radii)):
        t = path[min(i + 1, len(path) - 1)] - path[max(i - 1, 0)]
        t /= np.linalg.norm(t)
        a = np.cross(t, [0.0, 1.0, 0.0]) if abs(t[1]) < 0.9 else np.cross(t, [1.0, 0.0, 0.0])
        a /= np.linalg.norm(a)
        b = np.cross(t, a)
        ang = 2 * np.pi * np.arange(sides) / sides
        rings.append(p + r * (np.cos(ang)[:, None] * a + np.sin(ang)[:, None] * b))
    verts = np.concatenate(rings)
    faces = []
    for i in range(len(path) - 1):
        for j in range(sides):
            a0, a1 = i * sides + j, i * sides + (j + 1) % sides
            faces.append([a0, a1, a1 + sides, a0 + sides])
    extra = []
    if cap_bottom:
        extra.append(path[0])
        c = len(verts)
        faces += [[c, (j + 1) % sides, j] for j in range(sides)]
    if cap_top:
        extra.append(path[-1])
        c = len(verts) + len(extra) - 1
        base = (len(path) - 1) * sides
        faces += [[c, base + j, base + (j + 1) % sides] for j in range(sides)]
    if extra:
        verts = np.concatenate([verts, np.array(extra)])
    return verts, faces


def blade(origin, direction, side, length, width, nu=8, nv=4, curl=0.15):
    """A leaf/petal: a grid along ``direction`` with a lens-shaped width profile, curling up."""
    direction = np.asarray(direction, float) / np.linalg.norm(direction)
    side = np.asarray(side, float) / np.linalg.norm(side)
    normal = np.cross(direction, side)
    verts, faces = [], []
    for i in range(nu + 1):
        u = i / nu
        half = width * math.sin(math.pi * u) ** 0.8 / 2
        for j in range(nv + 1):
            v = (j / nv) * 2 - 1
            p = (np.asarray(origin) + direction * length * u + side * half * v
                 + normal * (curl * length * u * u + 0.25 * half * v * v))
            verts.append(p)
    for i in range(nu):
        for j in range(nv):
            a = i * (nv + 1) + j
            faces.append([a, a + nv + 1, a + nv + 2, a + 1])
    return np.array(verts), faces


def build() -> Builder:
    b = Builder()
    # pot: a truncated cone with a rim, open top filled with soil-coloured disc (same material)
    z = np.array([0.0, 0.02, 0.30, 0.32, 0.36])
    r = np.array([0.14, 0.15, 0.20, 0.23, 0.23])
    path = np.stack([np.zeros_like(z), np.zeros_like(z), z], 1)
    v, f = tube(path, r, 24)
    b.add(v, f, "Pot")
    # stem: a gentle S curve
    t = np.linspace(0, 1, 14)
    stem = np.stack([0.06 * np.sin(np.pi * t * 1.5), -0.03 * np.sin(np.pi * t), 0.34 + 0.86 * t], 1)
    v, f = tube(stem, np.linspace(0.025, 0.016, len(t)), 8)
    b.add(v, f, "Stem")
    # leaves
    for k, (h, ang) in enumerate(((0.55, 30.0), (0.72, 210.0))):
        i = int(round((h - 0.34) / 0.86 * (len(t) - 1)))
        a = math.radians(ang)
        d = np.array([math.cos(a), math.sin(a), 0.55])
        s = np.array([-math.sin(a), math.cos(a), 0.0])
        v, f = blade(stem[i], d, s, 0.32, 0.13, curl=0.25)
        b.add(v, f, "Leaf")
    # head: centre disc (a flattened tube) and eight petals
    top = stem[-1]
    head = np.array([top, top + [0.0, -0.04, 0.05]])
    v, f = tube(head, np.array([0.07, 0.07]), 16)
    b.add(v, f, "Centre")
    face_dir = np.array([0.0, -0.6, 0.8])
    face_dir /= np.linalg.norm(face_dir)
    ax1 = np.array([1.0, 0.0, 0.0])
    ax2 = np.cross(face_dir, ax1)
    for k in range(8):
        a = 2 * math.pi * k / 8
        d = math.cos(a) * ax1 + math.sin(a) * ax2
        s = np.cross(face_dir, d)
        v, f = blade(top + [0.0, -0.02, 0.025] + 0.06 * d, d, s, 0.2, 0.11, nu=6, nv=3, curl=-0.1)
        b.add(v, f, "Petal")
    return b


def write(b: Builder, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    obj, mtl = out / "flower.obj", out / "flower.mtl"
    verts = np.concatenate(b.verts)
    lines = ["# dsquare sample mesh: a potted flower. Procedural (scripts/make_sample_mesh.py), CC0-1.0.",
             "# Coordinates: Blender's (+Z up, front toward -Y), metres.",
             "mtllib flower.mtl", "o Flower"]
    lines += [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in verts]
    current = None
    for material, face in b.faces:
        if material != current:
            lines.append(f"usemtl {material}")
            current = material
        lines.append("f " + " ".join(str(i + 1) for i in face))
    obj.write_text("\n".join(lines) + "\n")
    m = ["# dsquare sample mesh materials, CC0-1.0"]
    for name, (r, g, bb) in MATERIALS.items():
        m += [f"newmtl {name}", f"Kd {r:.3f} {g:.3f} {bb:.3f}", "Ka 0 0 0", "Ks 0.1 0.1 0.1", "d 1", "illum 2", ""]
    mtl.write_text("\n".join(m))
    return obj, mtl


if __name__ == "__main__":
    builder = build()
    paths = write(builder, OUT)
    print(f"{builder.count} vertices, {len(builder.faces)} faces -> {', '.join(str(p) for p in paths)}")
