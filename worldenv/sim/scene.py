"""Geometry of objects in a LIBERO scene, read from the simulator (for the scripted expert).

An object's extent is the union of the bounding boxes of its collision geoms (group 0), taken
in the world frame. Its narrow horizontal direction is where the gripper should close: the
Panda opens to 8 cm, and several LIBERO objects are longer than that one way.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np

_CORNERS = np.array(list(itertools.product([-1, 1], repeat=3)), np.float64)  # (8, 3)


@dataclasses.dataclass(frozen=True)
class Box:
    """World-frame extent of an object."""

    low: np.ndarray      # (3,) min corner
    high: np.ndarray     # (3,) max corner
    narrow: np.ndarray   # (2,) unit xy direction of the smallest horizontal width
    width: float         # horizontal width along `narrow`, metres
    headings: np.ndarray  # (36, 2) unit xy directions, 5 degrees apart
    widths: np.ndarray    # (36,) horizontal width along each heading

    @property
    def centre(self) -> np.ndarray:
        return (self.low + self.high) / 2


def _subtree(model, root: int) -> set[int]:
    bodies = {root}
    for body in range(root + 1, model.nbody):
        if model.body_parentid[body] in bodies:
            bodies.add(body)
    return bodies


def corners(inner, name: str) -> np.ndarray:
    """(8 * G, 3) world corners of the collision-geom boxes of object `name`."""
    model, data = inner.sim.model._model, inner.sim.data._data
    bodies = _subtree(model, inner.obj_body_id[name])
    geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] in bodies and model.geom_group[g] == 0]
    if not geoms:  # some meshes keep no separate collision geom
        geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] in bodies]
    points = []
    for g in geoms:
        centre, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        local = centre + _CORNERS * half                                  # (8, 3) in the geom frame
        points.append(data.geom_xpos[g] + local @ data.geom_xmat[g].reshape(3, 3).T)
    return np.concatenate(points)


def box(inner, name: str) -> Box:
    """Extent and narrow direction of object `name` (searched over 36 headings, 5 degrees apart)."""
    points = corners(inner, name)
    xy = points[:, :2]
    angles = np.deg2rad(np.arange(0, 180, 5))
    dirs = np.stack([np.cos(angles), np.sin(angles)], 1)                 # (36, 2)
    proj = xy @ dirs.T                                                    # (P, 36)
    widths = proj.max(0) - proj.min(0)
    best = int(widths.argmin())
    return Box(points.min(0), points.max(0), dirs[best], float(widths[best]), dirs, widths)


def separation(centre: np.ndarray, axis: np.ndarray, half: tuple[float, float], other: Box) -> float:
    """Horizontal gap (metres) between a rectangle and `other`'s box; negative = overlap depth.

    The rectangle is centred at `centre` (xy), with half-lengths `half` along the unit xy
    `axis` and across it. Separating-axis test over both shapes' axes: a lower bound of the
    true distance when positive."""
    u = np.asarray(axis, np.float64)
    v = np.array([-u[1], u[0]])
    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], np.float64)
    rect = centre[:2] + signs[:, :1] * half[0] * u + signs[:, 1:] * half[1] * v      # (4, 2)
    xy = np.array(list(itertools.product(*zip(other.low[:2], other.high[:2]))))   # (4, 2)
    gap = -np.inf
    for a in (u, v, np.array([1.0, 0.0]), np.array([0.0, 1.0])):
        p, q = rect @ a, xy @ a
        gap = max(gap, q.min() - p.max(), p.min() - q.max())
    return float(gap)
