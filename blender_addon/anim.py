"""Keyframes for Blender 4.2 to 5.x, written in bulk.

Blender 4.4 introduced slotted (layered) actions and 5.0 removed ``Action.fcurves``; one helper here
finds or makes an F-curve on any of them, and keyframes are written with one ``foreach_set`` per
F-curve, never one Python call per key.

Shape-key timelines: a point set that moves through F frames is stored as one relative shape key
per frame over a basis (the rest shape); key ``f`` is keyed as a hat function (0 at the previous
frame, 1 at its own, 0 at the next) with linear interpolation, so the evaluated positions at
frame ``f`` are exactly frame ``f``'s and in between they blend linearly.
"""

from __future__ import annotations

from typing import Sequence

import bpy
import numpy as np

INTERPOLATION = {item.identifier: i for i, item in enumerate(bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items)}


def has_slotted_actions() -> bool:
    """True on Blender 4.4+ (actions with slots and layers)."""
    return "slots" in bpy.types.Action.bl_rna.properties


def ensure_action(id_block, name: str):
    """The action animating ``id_block`` (an object, a shape-key block, ...); a new one named
    ``name`` when it has none. On 4.4+ the slot is assigned when the first F-curve is made."""
    ad = id_block.animation_data or id_block.animation_data_create()
    if ad.action is None:
        ad.action = bpy.data.actions.new(name)
    return ad.action


def ensure_fcurve(action, id_block, data_path: str, index: int = 0):
    """Find or make the F-curve for ``data_path[index]`` of ``id_block`` in ``action``.

    4.4+ (slotted): ``Action.fcurve_ensure_for_datablock`` (makes the layer, strip, slot and
    channel bag as needed). 4.2/4.3 (legacy): ``Action.fcurves``.
    """
    if hasattr(action, "fcurve_ensure_for_datablock"):
        return action.fcurve_ensure_for_datablock(id_block, data_path, index=index)
    fc = action.fcurves.find(data_path, index=index)  # pragma: no cover - Blender < 4.4
    return fc if fc is not None else action.fcurves.new(data_path, index=index)


def action_fcurves(action, id_block=None) -> list:
    """All F-curves of an action (every slot's channel bag on 4.4+, or the one ``id_block`` uses)."""
    if not has_slotted_actions() or not hasattr(action, "layers"):
        return list(action.fcurves)  # pragma: no cover - Blender < 4.4
    slot = None
    if id_block is not None and id_block.animation_data is not None:
        slot = id_block.animation_data.action_slot
    out = []
    for layer in action.layers:
        for strip in layer.strips:
            for bag in getattr(strip, "channelbags", []):
                if slot is None or bag.slot == slot:
                    out.extend(bag.fcurves)
    if not out and hasattr(action, "fcurves"):  # 4.4 legacy (unlayered) action
        try:
            out = list(action.fcurves)
        except (AttributeError, RuntimeError):
            pass
    return out


def set_keyframes(fcurve, frames: Sequence[float], values: Sequence[float], interpolation: str = "LINEAR") -> None:
    """Replace ``fcurve``'s keys by (frames[i], values[i]) in one bulk write; frames ascending."""
    frames = np.asarray(frames, dtype=np.float32).reshape(-1)
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    if frames.shape != values.shape:
        raise ValueError(f"frames and values differ in length: {frames.shape[0]} vs {values.shape[0]}")
    kp = fcurve.keyframe_points
    if len(kp):
        kp.clear()
    kp.add(int(frames.shape[0]))
    co = np.empty(frames.shape[0] * 2, dtype=np.float32)
    co[0::2], co[1::2] = frames, values
    kp.foreach_set("co", co)
    kp.foreach_set("interpolation", np.full(frames.shape[0], INTERPOLATION[interpolation], dtype=np.int32))
    fcurve.update()


def hat_keys(index: int, frame_of: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Keys of shape key ``index`` (0..F-1) in a timeline whose frame ``i`` sits at scene frame
    ``frame_of[i]``: 1 at its own frame, 0 at the neighbouring frames. With constant extrapolation
    the first key stays 1 before the start and the last stays 1 after the end, so the weights of
    all F keys sum to 1 at every scene frame."""
    frame_of = np.asarray(frame_of, dtype=np.float64).reshape(-1)
    last = frame_of.shape[0] - 1
    if not 0 <= index <= last:
        raise ValueError(f"shape key index must be in 0..{last}, got {index}")
    frames, values = [frame_of[index]], [1.0]
    if index > 0:
        frames.insert(0, frame_of[index - 1])
        values.insert(0, 0.0)
    if index < last:
        frames.append(frame_of[index + 1])
        values.append(0.0)
    return np.asarray(frames), np.asarray(values)


def remove_animation(id_block) -> None:
    """Remove ``id_block``'s action (if nobody else uses it) and its animation data."""
    ad = id_block.animation_data
    if ad is None:
        return
    action = ad.action
    id_block.animation_data_clear()
    if action is not None and action.users == 0:
        bpy.data.actions.remove(action)
