"""Import a Result as keyframed geometry, in small steps that a timer can spread over ticks.

Two objects come back into a new collection "D² <object>":

* the **point cloud**: a mesh of N loose vertices whose positions per frame are keyed shape keys
  (``anim.hat_keys``), shown as points by a Geometry Nodes modifier (Mesh to Points, radius from
  the Gaussians' scales) with a material that shows the per-point colours (a colour attribute
  ``Col``, RGB = colour, A = opacity). It plays back in the viewport and exports to Alembic (as a
  vertex-only mesh; see ``bake.export_alembic``).
* the **animated mesh**: a copy of the artist's evaluated mesh (modifiers applied, materials kept)
  with one keyed shape key per frame, so their own model moves; the original is never modified
  (it is only hidden in the viewport when ``hide_original`` is set).

Everything is placed back in the original object's frame: returned positions are in the turntable's
normalised space and go through the remembered normalisation and the object's matrix_world.

``ResultImporter.steps()`` is a generator: each ``next()`` does one bounded piece of work (one shape
key, one attribute...). ``run()`` drives it to the end; ``abort()`` removes everything made so far,
so nothing half-imported is ever left behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import bpy
import numpy as np

from . import anim

POINT_NODES_NAME = "D² Points"
POINT_MATERIAL_NAME = "D² Point Colours"
NODES_VERSION = 1
COLOR_ATTRIBUTE = "Col"
RADIUS_ATTRIBUTE = "d2_radius"
OPACITY_ATTRIBUTE = "d2_opacity"


@dataclass
class ImportSpec:
    """What to import and where to put it.

    centers [F, N, 3], vertices [F, P, 3] (or None): normalised object space, float32.
    colors [N, 3] uint8 or float in [0, 1] (sRGB); opacities [N]; scales [N, 3] (normalised units).
    to_local: normalised points [..., 3] -> the source object's local space; local_scale: one
    normalised unit in local units; matrix_world [4, 4]: where the source object was;
    frame_of [F]: the scene frame of each result frame.
    """

    name: str
    centers: np.ndarray
    colors: np.ndarray
    opacities: np.ndarray
    scales: np.ndarray
    vertices: np.ndarray | None
    frame_of: np.ndarray
    matrix_world: np.ndarray
    to_local: Callable[[np.ndarray], np.ndarray]
    local_scale: float
    source_object: str = ""
    source_vertex_count: int = -1
    hide_original: bool = False
    point_size: float = 1.0
    scene_fps: tuple[int, float] | None = None  # (fps, fps_base) to set, or None to keep the scene's
    set_frame_range: bool = True


@dataclass
class ImportOutcome:
    collection: str = ""
    point_cloud: str = ""
    animated_mesh: str = ""
    warnings: list[str] = field(default_factory=list)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def colors_to_float(colors: np.ndarray) -> np.ndarray:
    """[N, 3] uint8 or float -> float32 sRGB in [0, 1]."""
    colors = np.asarray(colors)
    if colors.dtype == np.uint8:
        return colors.astype(np.float32) / 255.0
    return np.clip(colors.astype(np.float32), 0.0, 1.0)


class ResultImporter:
    """Builds the objects of one Result; see the module docstring."""

    def __init__(self, spec: ImportSpec, scene=None):
        self.spec = spec
        self.scene_name = (scene or bpy.context.scene).name
        self.outcome = ImportOutcome()
        self._created: list[tuple[str, str]] = []  # (collection attr of bpy.data, name), in creation order
        self._restore: list[Callable[[], None]] = []
        self._done = False
        F = int(spec.centers.shape[0])
        if F < 1:
            raise ValueError("the result has no frames")
        if spec.frame_of.shape[0] != F:
            raise ValueError(f"frame_of has {spec.frame_of.shape[0]} entries for {F} frames")
        if spec.vertices is not None and spec.vertices.shape[0] != F:
            raise ValueError(f"vertices has {spec.vertices.shape[0]} frames, centers {F}")

    # ------------------------------------------------------------------------------- bookkeeping

    @property
    def scene(self):
        return bpy.data.scenes[self.scene_name]

    def _track(self, block) -> None:
        """Remember a data-block this import made (by session_uid: renames do not lose it)."""
        kinds = ((bpy.types.Object, "objects"), (bpy.types.Mesh, "meshes"), (bpy.types.Material, "materials"),
                 (bpy.types.Collection, "collections"), (bpy.types.Action, "actions"),
                 (bpy.types.NodeTree, "node_groups"))
        for cls, attr in kinds:
            if isinstance(block, cls):
                self._created.append((attr, block.session_uid))
                return
        raise TypeError(f"cannot track {block!r}")

    def _untrack(self, block) -> None:
        self._created = [(a, uid) for a, uid in self._created if uid != block.session_uid]

    def created(self) -> list[tuple[str, int]]:
        """(bpy.data collection name, session_uid) of every data-block made so far."""
        return list(self._created)

    def abort(self) -> None:
        """Remove everything this import made and undo its changes to the scene (idempotent)."""
        for undo in reversed(self._restore):
            try:
                undo()
            except (ReferenceError, KeyError, RuntimeError):
                pass
        self._restore.clear()
        for attr, uid in reversed(self._created):
            coll = getattr(bpy.data, attr)
            block = next((b for b in coll if b.session_uid == uid), None)
            if block is None:
                continue
            if attr == "meshes" and block.shape_keys is not None:
                anim.remove_animation(block.shape_keys)
            if attr == "objects":
                coll.remove(block, do_unlink=True)
            else:
                coll.remove(block)
        self._created.clear()

    def run(self) -> ImportOutcome:
        """Import in one go (scripts, tests); on any error everything made is removed and it re-raises."""
        for _ in self.steps():
            pass
        return self.outcome

    # ----------------------------------------------------------------------------------- the work

    def steps(self) -> Iterator[str]:
        """One bounded piece of work per ``next()``; yields a short description of what comes next."""
        try:
            yield from self._steps()
            self._done = True
        except BaseException:
            self.abort()
            raise

    def _steps(self) -> Iterator[str]:
        spec = self.spec
        scene = self.scene
        coll = bpy.data.collections.new(f"D² {spec.name}")
        self._track(coll)
        scene.collection.children.link(coll)
        self.outcome.collection = coll.name
        yield "point cloud"

        pc_obj = yield from self._point_cloud(coll)
        self.outcome.point_cloud = pc_obj.name

        if spec.vertices is not None:
            source = bpy.data.objects.get(spec.source_object) if spec.source_object else None
            if source is None:
                self.outcome.warnings.append(
                    f"'{spec.source_object}' no longer exists: only the point cloud was imported")
            else:
                mesh_obj = yield from self._animated_mesh(coll, source)
                if mesh_obj is not None:
                    self.outcome.animated_mesh = mesh_obj.name
                    if spec.hide_original:
                        self._hide(source)
        yield "scene"
        self._scene_settings(scene)
        self._select(scene, [self.outcome.animated_mesh or self.outcome.point_cloud, self.outcome.point_cloud])

    def _new_object(self, name: str, mesh, coll):
        obj = bpy.data.objects.new(name, mesh)
        self._track(obj)
        coll.objects.link(obj)
        from mathutils import Matrix

        obj.matrix_world = Matrix(np.asarray(self.spec.matrix_world, dtype=np.float64).tolist())
        return obj

    def _point_cloud(self, coll):
        spec = self.spec
        F, N = int(spec.centers.shape[0]), int(spec.centers.shape[1])
        def frame_local(f: int) -> np.ndarray:
            return np.ascontiguousarray(spec.to_local(spec.centers[f]), dtype=np.float32)

        mesh = bpy.data.meshes.new(f"D² {spec.name} points")
        self._track(mesh)
        mesh.vertices.add(N)
        mesh.vertices.foreach_set("co", frame_local(0).ravel())
        mesh.update()
        yield "point attributes"

        rgb = srgb_to_linear(colors_to_float(spec.colors))
        opacity = np.clip(np.asarray(spec.opacities, dtype=np.float32).reshape(N), 0.0, 1.0)
        col = mesh.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT")
        rgba = np.concatenate([rgb, opacity[:, None]], axis=1)
        col.data.foreach_set("color", np.ascontiguousarray(rgba, dtype=np.float32).ravel())
        mesh.color_attributes.active_color = col
        if hasattr(mesh.color_attributes, "render_color_index"):
            mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
        op = mesh.attributes.new(OPACITY_ATTRIBUTE, "FLOAT", "POINT")
        op.data.foreach_set("value", opacity)
        radius = np.asarray(spec.scales, dtype=np.float32).reshape(N, 3).mean(axis=1) * spec.local_scale
        radius = np.clip(radius, 1e-5 * spec.local_scale, 0.2 * spec.local_scale).astype(np.float32)
        rad = mesh.attributes.new(RADIUS_ATTRIBUTE, "FLOAT", "POINT")
        rad.data.foreach_set("value", radius)
        yield "point nodes"

        obj = self._new_object(f"D² {spec.name} points", mesh, coll)
        obj["dsquare_role"] = "points"
        obj["dsquare_source"] = spec.source_object
        material = self._point_material(rgb.mean(axis=0) if N else np.ones(3))
        mesh.materials.append(material)
        group = self._point_nodes(material)
        mod = obj.modifiers.new("D² Points", "NODES")
        mod.node_group = group
        set_modifier_input(mod, "Point Size", float(spec.point_size))
        yield "point frames"

        yield from self._shape_key_timeline(obj, frame_local, F, f"D² {spec.name} points")
        return obj

    def _animated_mesh(self, coll, source):
        spec = self.spec
        F, P = int(spec.vertices.shape[0]), int(spec.vertices.shape[1])
        depsgraph = bpy.context.evaluated_depsgraph_get()
        ev = source.evaluated_get(depsgraph)
        mesh = bpy.data.meshes.new_from_object(ev, preserve_all_data_layers=True, depsgraph=depsgraph)
        self._track(mesh)
        mesh.name = f"D² {spec.name}"
        if len(mesh.vertices) != P:
            self.outcome.warnings.append(
                f"'{source.name}' changed since Generate ({len(mesh.vertices)} vertices now, {P} sent): "
                "only the point cloud was imported")
            self._untrack(mesh)
            bpy.data.meshes.remove(mesh)
            return None
        yield "mesh copy"
        obj = self._new_object(f"{spec.name} D²", mesh, coll)
        obj["dsquare_role"] = "mesh"
        obj["dsquare_source"] = spec.source_object
        # object-level material links do not travel with new_from_object's mesh
        for i, slot in enumerate(source.material_slots):
            if i < len(obj.material_slots) and slot.link == "OBJECT" and slot.material is not None:
                obj.material_slots[i].link = "OBJECT"
                obj.material_slots[i].material = slot.material
        yield "mesh frames"

        def frame_local(f: int) -> np.ndarray:
            return np.ascontiguousarray(spec.to_local(spec.vertices[f]), dtype=np.float32)

        yield from self._shape_key_timeline(obj, frame_local, F, f"{spec.name} D²")
        return obj

    def _shape_key_timeline(self, obj, frame_local, F: int, action_name: str):
        """Basis = the object's current positions; one shape key per frame, keyed as a hat."""
        obj.shape_key_add(name="Basis", from_mix=False)
        key = obj.data.shape_keys
        key.use_relative = True
        for f in range(F):
            kb = obj.shape_key_add(name=f"D² frame {f}", from_mix=False)
            kb.points.foreach_set("co", frame_local(f).ravel())
            kb.value = 0.0
            kb.slider_min, kb.slider_max = 0.0, 1.0
            yield "shape keys"
        action = anim.ensure_action(key, f"{action_name} motion")
        self._track(action)
        for f in range(F):
            fc = anim.ensure_fcurve(action, key, f'key_blocks["D² frame {f}"].value')
            frames, values = anim.hat_keys(f, self.spec.frame_of)
            anim.set_keyframes(fc, frames, values, "LINEAR")
            fc.extrapolation = "CONSTANT"
            if f % 16 == 15:
                yield "keyframes"
        yield "keyframes done"

    # -------------------------------------------------------------------------- shared data-blocks

    def _point_material(self, mean_linear_rgb: np.ndarray):
        mat = bpy.data.materials.get(POINT_MATERIAL_NAME)
        if mat is not None and mat.get("dsquare_nodes") == NODES_VERSION:
            return mat
        mat = bpy.data.materials.new(POINT_MATERIAL_NAME)
        self._track(mat)
        mat["dsquare_nodes"] = NODES_VERSION
        mat.diffuse_color = (*[float(c) for c in mean_linear_rgb[:3]], 1.0)  # solid-mode viewport colour
        build_point_material(mat)
        return mat

    def _point_nodes(self, material):
        group = bpy.data.node_groups.get(POINT_NODES_NAME)
        if group is not None and group.get("dsquare_nodes") == NODES_VERSION:
            return group
        group = bpy.data.node_groups.new(POINT_NODES_NAME, "GeometryNodeTree")
        self._track(group)
        group["dsquare_nodes"] = NODES_VERSION
        build_point_nodes(group, material)
        return group

    # ------------------------------------------------------------------------------------- scene

    def _hide(self, source) -> None:
        was_hidden = source.hide_get()
        name = source.name

        def restore():
            ob = bpy.data.objects.get(name)
            if ob is not None:
                ob.hide_set(was_hidden)

        try:
            source.hide_set(True)
        except RuntimeError:  # not in the active view layer: nothing to hide
            return
        self._restore.append(restore)

    def _scene_settings(self, scene) -> None:
        spec = self.spec
        r = scene.render
        old = (scene.frame_start, scene.frame_end, r.fps, r.fps_base)

        def restore():
            sc = bpy.data.scenes.get(self.scene_name)
            if sc is not None:
                sc.frame_start, sc.frame_end, sc.render.fps, sc.render.fps_base = old

        self._restore.append(restore)
        if spec.scene_fps is not None:
            r.fps, r.fps_base = int(spec.scene_fps[0]), float(spec.scene_fps[1])
        if spec.set_frame_range:
            first, last = int(np.floor(spec.frame_of[0])), int(np.ceil(spec.frame_of[-1]))
            scene.frame_start = first
            scene.frame_end = max(last, first)

    def _select(self, scene, names) -> None:
        view_layer = getattr(bpy.context, "view_layer", None)
        if view_layer is None or bpy.context.scene != scene:  # e.g. a timer without a window context
            view_layer = scene.view_layers[0]
        for ob in scene.objects:
            if ob.select_get(view_layer=view_layer):
                ob.select_set(False, view_layer=view_layer)
        active = None
        for name in names:
            ob = bpy.data.objects.get(name) if name else None
            if ob is not None:
                ob.select_set(True, view_layer=view_layer)
                active = active or ob
        if active is not None:
            view_layer.objects.active = active


def set_modifier_input(mod, socket_name: str, value) -> None:
    """Set a Geometry Nodes modifier input by its interface name (4.2-5.x)."""
    for item in mod.node_group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == socket_name:
            mod[item.identifier] = value
            return
    raise KeyError(socket_name)


def build_point_nodes(group, material) -> None:
    """Mesh to Points (radius = the ``d2_radius`` attribute x 'Point Size'), then the colour material."""
    iface = group.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    size = iface.new_socket("Point Size", in_out="INPUT", socket_type="NodeSocketFloat")
    size.default_value, size.min_value, size.max_value = 1.0, 0.0, 100.0
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    gin = nodes.new("NodeGroupInput")
    gout = nodes.new("NodeGroupOutput")
    radius = nodes.new("GeometryNodeInputNamedAttribute")
    radius.data_type = "FLOAT"
    radius.inputs["Name"].default_value = RADIUS_ATTRIBUTE
    mul = nodes.new("ShaderNodeMath")
    mul.operation = "MULTIPLY"
    to_points = nodes.new("GeometryNodeMeshToPoints")
    to_points.mode = "VERTICES"
    set_mat = nodes.new("GeometryNodeSetMaterial")
    set_mat.inputs["Material"].default_value = material
    links.new(radius.outputs["Attribute"], mul.inputs[0])
    links.new(gin.outputs["Point Size"], mul.inputs[1])
    links.new(gin.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(mul.outputs[0], to_points.inputs["Radius"])
    links.new(to_points.outputs["Points"], set_mat.inputs["Geometry"])
    links.new(set_mat.outputs["Geometry"], gout.inputs["Geometry"])
    for i, node in enumerate((gin, radius, mul, to_points, set_mat, gout)):
        node.location = (i * 200.0, 0.0)


def build_point_material(mat) -> None:
    """Emission of the ``Col`` attribute (the colours as generated, independent of scene lights),
    mixed with transparency by its alpha (the Gaussians' opacity)."""
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.clear()
    attr = nt.nodes.new("ShaderNodeAttribute")
    attr.attribute_type = "GEOMETRY"
    attr.attribute_name = COLOR_ATTRIBUTE
    emit = nt.nodes.new("ShaderNodeEmission")
    emit.inputs["Strength"].default_value = 1.0
    transparent = nt.nodes.new("ShaderNodeBsdfTransparent")
    mix = nt.nodes.new("ShaderNodeMixShader")
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(attr.outputs["Color"], emit.inputs["Color"])
    nt.links.new(attr.outputs["Alpha"], mix.inputs["Fac"])
    nt.links.new(transparent.outputs[0], mix.inputs[1])
    nt.links.new(emit.outputs[0], mix.inputs[2])
    nt.links.new(mix.outputs[0], out.inputs["Surface"])
    for i, node in enumerate((attr, emit, transparent, mix, out)):
        node.location = (i * 220.0, 0.0)
