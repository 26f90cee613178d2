"""3D Gaussian Splatting PLY files (the INRIA layout every common splat viewer reads).

Binary little-endian vertex elements with x, y, z, nx, ny, nz, f_dc_0..2, opacity, scale_0..2,
rot_0..3, all float32, stored *pre-activation*: colour as the degree-0 spherical-harmonic
coefficient ``(rgb - 0.5) / C0``, opacity as a logit, scales as logs, rotation as (w, x, y, z).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SH_C0 = 0.28209479177387814
PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


def write_ply(path, means, quats, scales, opacities, colours) -> Path:
    """means [N, 3], quats [N, 4] (w, x, y, z), scales [N, 3] (std devs), opacities [N], colours [N, 3] in [0, 1]."""
    path = Path(path)
    N = int(np.asarray(means).shape[0])
    op = np.clip(np.asarray(opacities, np.float64), 1e-6, 1 - 1e-6)
    q = np.asarray(quats, np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    cols = [np.asarray(means, np.float64), np.zeros((N, 3)), (np.asarray(colours, np.float64) - 0.5) / SH_C0,
            np.log(op / (1 - op))[:, None], np.log(np.maximum(np.asarray(scales, np.float64), 1e-12)), q]
    data = np.concatenate(cols, axis=1).astype("<f4")
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {N}\n"
    header += "".join(f"property float {p}\n" for p in PROPERTIES) + "end_header\n"
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())
    return path


def read_ply(path) -> dict[str, np.ndarray]:
    """Read a 3DGS PLY back into activated arrays: means, quats, scales, opacities, colours."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    if lines[0] != "ply" or "binary_little_endian" not in lines[1]:
        raise ValueError(f"{path}: not a binary little-endian PLY")
    count = int(next(l for l in lines if l.startswith("element vertex")).split()[-1])
    names = [l.split()[-1] for l in lines if l.startswith("property")]
    if any(not l.startswith("property float") for l in lines if l.startswith("property")):
        raise ValueError(f"{path}: only float properties are supported")
    table = np.frombuffer(raw[end:], dtype="<f4", count=count * len(names)).reshape(count, len(names))
    col = {n: table[:, i] for i, n in enumerate(names)}
    stack = lambda *ns: np.stack([col[n] for n in ns], 1)
    return {
        "means": stack("x", "y", "z"),
        "quats": stack("rot_0", "rot_1", "rot_2", "rot_3"),
        "scales": np.exp(stack("scale_0", "scale_1", "scale_2")),
        "opacities": 1 / (1 + np.exp(-col["opacity"])),
        "colours": stack("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5,
    }
