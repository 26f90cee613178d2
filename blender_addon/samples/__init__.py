"""dsquare's sample mesh (``flower.obj`` + ``flower.mtl``: a potted flower, procedural, CC0-1.0;
regenerate with ``scripts/make_sample_mesh.py``), for the demo, the tests and artists trying the add-on.

``add_sample`` reads the OBJ with a tiny reader (vertices, polygon faces, ``usemtl`` groups, ``Kd``
colours) into a new mesh object: no importer operator, no context needed. The file is written in
Blender's axes (+Z up, front toward -Y), so nothing is rotated.
"""

from __future__ import annotations

from pathlib import Path

import bpy

SAMPLES_DIR = Path(__file__).resolve().parent
FLOWER = SAMPLES_DIR / "flower.obj"


def read_obj(path: Path) -> tuple[list[tuple[float, float, float]], list[list[int]], list[int], list[str]]:
    """(vertices, faces (0-based), material index per face, material names in order of first use)."""
    verts, faces, face_mat, materials = [], [], [], []
    current = 0
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if parts[0] == "v":
            verts.append(tuple(float(x) for x in parts[1:4]))
        elif parts[0] == "f":
            faces.append([int(tok.split("/")[0]) - 1 for tok in parts[1:]])
            face_mat.append(current)
        elif parts[0] == "usemtl":
            name = parts[1]
            if name not in materials:
                materials.append(name)
            current = materials.index(name)
    return verts, faces, face_mat, materials


def read_mtl(path: Path) -> dict[str, tuple[float, float, float]]:
    """Material name -> Kd base colour."""
    colours, name = {}, None
    if not Path(path).is_file():
        return colours
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "newmtl":
            name = parts[1]
        elif parts[0] == "Kd" and name is not None:
            colours[name] = tuple(float(x) for x in parts[1:4])
    return colours


def _material(name: str, colour: tuple[float, float, float]):
    full = f"D² Sample {name}"
    mat = bpy.data.materials.get(full)
    if mat is None:
        mat = bpy.data.materials.new(full)
        mat.diffuse_color = (*colour, 1.0)
        if bpy.app.version < (5, 0, 0):
            mat.use_nodes = True
        bsdf = mat.node_tree.nodes.get("Principled BSDF") if mat.node_tree else None
        if bsdf is not None:
            bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
    return mat


def add_sample(context=None, name: str = "Flower", location=(0.0, 0.0, 0.0), path: Path = FLOWER):
    """Add the sample as a new mesh object in the active collection; makes it active and selected."""
    context = context or bpy.context
    verts, faces, face_mat, materials = read_obj(path)
    colours = read_mtl(Path(path).with_suffix(".mtl"))
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    for m in materials:
        mesh.materials.append(_material(m, colours.get(m, (0.8, 0.8, 0.8))))
    mesh.polygons.foreach_set("material_index", face_mat)
    mesh.validate()
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    collection = context.collection or context.scene.collection
    collection.objects.link(obj)
    view_layer = context.view_layer
    for ob in view_layer.objects:
        if ob.select_get():
            ob.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj
    return obj
