"""A scripted expert that reads object poses from the simulator.

No LIBERO demonstration dataset is reachable here, so the paper's "5 expert demos per task"
come from this script. It is a closed-loop phase machine over waypoints (world frame, metres):
open, hover above the grasp point, descend, close, lift, carry over the target, lower, open.
The OSC controller takes normalised deltas: 1.0 = 5 cm of position or 0.5 rad of rotation per
step, so an action is the waypoint error divided by that scale, clipped to [-1, 1].

Goals handled: `in`/`on` pick-and-place (libero_object, libero_spatial and the pick-and-place
tasks of libero_goal: 1, 2, 4, 6, 8, 9). Opening drawers, turning the stove on, pushing, and
placing into a closed drawer raise `UnsupportedTask`.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from worldenv.sim import scene

POS_SCALE = 0.05   # metres per unit of action (OSC output_max)
ROT_SCALE = 0.5    # radians per unit of action
MAX_ROT = 0.5      # faster turns while translating make the OSC swing the wrist joints
ORI_TOLERANCE = 0.08  # rad: a waypoint counts as reached only once the gripper is turned too


class UnsupportedTask(ValueError):
    """The expert has no script for this goal predicate."""


@dataclasses.dataclass(frozen=True)
class Grasp:
    """How to take one kind of object."""

    rim: bool = False              # take the wall of a hollow object (bowls), not its centre
    release_height: float = 0.12   # gripper opens this far above the target's reference point


# Bowls must be taken by the rim: closing on the centre grasps nothing.
GRASPS = {"akita_black_bowl": Grasp(rim=True, release_height=0.10)}
DEFAULT_GRASP = Grasp()
FINGER_DEPTH = 0.025   # the eef site is level with the finger pads; aim them this far below the top
MAX_GRASP_WIDTH = 0.065  # the Panda opens to 8 cm; leave room for position error
TABLE_CLEARANCE = 0.015  # ... but keep the eef site this high above the object's bottom (tips: -1.1 cm)
# Footprint of the open Panda hand around the eef site, from its collision geoms: (half-length
# along the closing axis, half-width across it) and the bottom's height above the site. The palm
# is 21 cm long and starts only 2.6 cm above the site, so it hits tall neighbours of short objects.
PALM_HALF, PALM_BOTTOM = (0.105, 0.033), 0.026
FINGERS_HALF, FINGERS_BOTTOM = (0.068, 0.011), -0.012
SAFE_CLEARANCE = 0.02    # metres between the hand and any neighbour's box at the grasp
PAD_INSET = 0.02         # an off-centre grasp keeps the finger pads' centre this far inside the object
OFFSET_COST = 10.0       # rad of wrist turn worth one metre of off-centre grasp
LARGE_FIXTURE = 0.4      # boxes wider than this (tables, floor) are not neighbours


@dataclasses.dataclass
class Phase:
    name: str
    target: np.ndarray | None   # (3,) waypoint for the eef; None = hold position
    gripper: float              # -1 open, +1 close
    tolerance: float = 0.01     # metres: phase ends when the eef is this close...
    min_steps: int = 0          # ...and at least this many steps were spent in it
    max_steps: int = 60


def grasp_for(object_name: str) -> Grasp:
    base = object_name.rsplit("_", 1)[0]  # "akita_black_bowl_1" -> "akita_black_bowl"
    return GRASPS.get(base, DEFAULT_GRASP)


# Targets that need more than pick-and-place: a drawer's inside (open it first), a table region
# (LIBERO-Goal pushes the plate there).
_NEEDS_MORE = re.compile(r"cabinet_\d+_(top|middle|bottom)_region$|^main_table_")


def pick_place_goal(goal_state: list) -> tuple[str, str]:
    """(object, target) of a pick-and-place goal, else UnsupportedTask."""
    if len(goal_state) != 1 or goal_state[0][0].lower() not in ("in", "on"):
        raise UnsupportedTask(f"no script for goal {goal_state}")
    _, obj, target = goal_state[0]
    if _NEEDS_MORE.search(target):
        raise UnsupportedTask(f"no script for goal {goal_state}: the target needs opening or pushing")
    return obj, target


def supports(goal_state: list) -> bool:
    try:
        pick_place_goal(goal_state)
    except UnsupportedTask:
        return False
    return True


def check_tasks(suite: str, tasks: list[int]) -> None:
    """UnsupportedTask naming the first task whose BDDL goal the expert cannot script (no env needed)."""
    from worldenv.sim import install, suites
    install.prepare()
    from libero.libero.envs.bddl_utils import robosuite_parse_problem
    for t in tasks:
        info = suites.task(suite, t)
        goal = robosuite_parse_problem(info.bddl_file)["goal_state"]
        if not supports(goal):
            raise UnsupportedTask(f"the scripted expert has no script for {suite} task {t} "
                                  f"({info.instruction!r}, goal {goal}); it handles in/on pick-and-place")


class ScriptedExpert:
    """Pick-and-place by waypoints. `reset(env)` at the start of an episode, then `act(env)` per step."""

    def __init__(self, gain: float = 1.0):
        self.gain = gain
        self._phases: list[Phase] = []
        self._index = 0
        self._steps = 0
        self._quat0: np.ndarray | None = None
        self._quat_goal: np.ndarray | None = None

    def reset(self, env) -> None:
        inner = env.inner
        self._object, self._target = pick_place_goal(inner.parsed_problem["goal_state"])
        self._grasp = grasp_for(self._object)
        self._quat0 = self._eef_quat(inner)
        self._quat_goal = None
        self._phases, self._index, self._steps = [], 0, 0

    def act(self, env) -> np.ndarray:
        """(7,) float32 action for the current state."""
        inner = env.inner
        if not self._phases:
            self._phases = self._plan(inner)
        phase = self._advance(inner)
        eef = self._eef_pos(inner)
        delta = np.zeros(3) if phase.target is None else (phase.target - eef) * self.gain / POS_SCALE
        action = np.concatenate([np.clip(delta, -1, 1), self._hold_orientation(inner), [phase.gripper]])
        return action.astype(np.float32)

    # --- planning -------------------------------------------------------------------------

    def _plan(self, inner) -> list[Phase]:
        grasp, yaw = self._grasp_pose(inner)
        self._quat_goal = _yawed(self._quat0, yaw)
        origin = self._pos(inner, self._object)
        place = self._pos(inner, self._target)
        carry_z = max(grasp[2], place[2]) + 0.20
        # Release with the object's origin over the target's: keep the grasp offset in xy.
        release = np.array([place[0] + grasp[0] - origin[0], place[1] + grasp[1] - origin[1],
                            place[2] + self._grasp.release_height])
        return [
            Phase("hover", grasp + [0, 0, 0.10], -1, tolerance=0.01),
            Phase("descend", grasp, -1, tolerance=0.008, max_steps=40),
            Phase("close", None, 1, tolerance=np.inf, min_steps=15),
            Phase("lift", np.array([grasp[0], grasp[1], carry_z]), 1, tolerance=0.02),
            Phase("carry", np.array([release[0], release[1], carry_z]), 1, tolerance=0.015),
            Phase("lower", release, 1, tolerance=0.015),
            Phase("open", None, -1, tolerance=np.inf, min_steps=10),
            Phase("retreat", release + [0, 0, 0.10], -1, tolerance=0.02, max_steps=10_000),
        ]

    def _grasp_pose(self, inner) -> tuple[np.ndarray, float]:
        """Grasp point (3,) for the eef site and the yaw (rad) that closes the fingers across
        the object's narrow side (or radially across a rim)."""
        extent = scene.box(inner, self._object)
        point = extent.centre.copy()
        point[2] = max(extent.high[2] - FINGER_DEPTH, extent.low[2] + TABLE_CLEARANCE)
        if self._grasp.rim:
            outer = (extent.high[:2] - extent.low[:2]).min() / 2
            # the rim nearest the robot's side (-x is towards the robot base)
            close_dir = np.array([1.0, 0.0])
            point[:2] -= close_dir * (outer - 0.015)
        else:
            close_dir, point = self._clear_grasp(inner, extent, point)
        return point, self._yaw_to(inner, close_dir)

    def _clear_grasp(self, inner, extent: scene.Box, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Closing direction and grasp point that keep the descending hand off the neighbours.

        The least-turn heading through the centre is kept when the hand clears every other
        object's box by SAFE_CLEARANCE. Otherwise the grasp may turn to any heading that still
        fits between the fingers and slide along the object's long side; the cheapest (turn,
        offset) that is safe wins, else the one with the most clearance."""
        neighbours = [scene.box(inner, name) for name in inner.obj_body_id if name != self._object]
        neighbours = [b for b in neighbours if (b.high[:2] - b.low[:2]).max() < LARGE_FIXTURE]
        default = self._closing_direction(inner, extent)
        if self._clearance(default, point, neighbours) >= SAFE_CLEARANCE:
            return default, point
        fits = np.flatnonzero(extent.widths < MAX_GRASP_WIDTH)
        if not len(fits):
            fits = [int(extent.widths.argmin())]
        best, best_key = (default, point), None
        n = len(extent.headings)  # headings cover half a turn: the perpendicular is n/2 further
        for i in fits:
            heading = extent.headings[i]
            across = np.array([-heading[1], heading[0]])
            reach = max(extent.widths[(i + n // 2) % n] / 2 - PAD_INSET, 0.0)
            for offset in np.linspace(-reach, reach, 2 * int(reach / 0.005) + 1):
                candidate = point.copy()
                candidate[:2] += offset * across
                clearance = self._clearance(heading, candidate, neighbours)
                cost = abs(self._yaw_to(inner, heading)) + OFFSET_COST * abs(offset)
                key = (0, cost) if clearance >= SAFE_CLEARANCE else (1, -clearance)
                if best_key is None or key < best_key:
                    best, best_key = (heading, candidate), key
        return best

    @staticmethod
    def _clearance(heading: np.ndarray, point: np.ndarray, neighbours: list[scene.Box]) -> float:
        """Least horizontal gap between the hand at `point` (closing along `heading`) and the
        boxes of neighbours tall enough to reach its palm or fingers."""
        gaps = [np.inf]
        for half, bottom in ((PALM_HALF, PALM_BOTTOM), (FINGERS_HALF, FINGERS_BOTTOM)):
            gaps += [scene.separation(point, heading, half, b) for b in neighbours if b.high[2] > point[2] + bottom]
        return min(gaps)

    def _closing_direction(self, inner, extent: scene.Box) -> np.ndarray:
        """The heading that fits between the open fingers with the least turn of the wrist:
        turning costs time and, with the arm moving, stability."""
        fits = extent.widths < MAX_GRASP_WIDTH
        if not fits.any():
            return extent.narrow
        turns = np.abs([self._yaw_to(inner, d) for d in extent.headings])
        return extent.headings[np.where(fits, turns, np.inf).argmin()]

    def _yaw_to(self, inner, direction: np.ndarray) -> float:
        """Yaw about world z that turns the fingers' closing axis (eef x) onto `direction`, in
        [-pi/2, pi/2] (a parallel gripper is symmetric under half turns)."""
        axis = np.array(inner.sim.data.site_xmat[inner.robots[0].eef_site_id]).reshape(3, 3)[:2, 0]
        yaw = np.arctan2(direction[1], direction[0]) - np.arctan2(axis[1], axis[0])
        return float((yaw + np.pi / 2) % np.pi - np.pi / 2)

    def _advance(self, inner) -> Phase:
        phase = self._phases[self._index]
        self._steps += 1
        reached = phase.target is None or (np.linalg.norm(phase.target - self._eef_pos(inner)) < phase.tolerance
                                           and np.linalg.norm(self._orientation_error(inner)) < ORI_TOLERANCE)
        done = (reached and self._steps >= phase.min_steps) or self._steps >= phase.max_steps
        if done and self._index < len(self._phases) - 1:
            self._index, self._steps = self._index + 1, 0
        return phase

    # --- simulator reads ------------------------------------------------------------------

    @staticmethod
    def _pos(inner, name: str) -> np.ndarray:
        return np.array(inner.object_states_dict[name].get_geom_state()["pos"], np.float64)

    @staticmethod
    def _eef_pos(inner) -> np.ndarray:
        return np.array(inner.sim.data.site_xpos[inner.robots[0].eef_site_id], np.float64)

    @staticmethod
    def _eef_quat(inner) -> np.ndarray:
        from robosuite.utils import transform_utils as T
        return T.mat2quat(np.array(inner.sim.data.site_xmat[inner.robots[0].eef_site_id]).reshape(3, 3))

    def _hold_orientation(self, inner) -> np.ndarray:
        """(3,) rotation action that turns the gripper back to its orientation at reset."""
        from robosuite.utils import transform_utils as T
        return np.clip(self._orientation_error(inner) / ROT_SCALE, -MAX_ROT, MAX_ROT)

    def _orientation_error(self, inner) -> np.ndarray:
        """(3,) world-frame axis-angle from the current gripper orientation to the goal."""
        from robosuite.utils import transform_utils as T
        goal = self._quat_goal if self._quat_goal is not None else self._quat0
        error = T.quat_multiply(goal, T.quat_inverse(self._eef_quat(inner)))
        if error[3] < 0:  # q and -q are the same turn; take the short way (angle <= pi)
            error = -error
        return T.quat2axisangle(error)


def _yawed(quat_xyzw: np.ndarray, yaw: float) -> np.ndarray:
    """`quat_xyzw` turned by `yaw` radians about the world z axis."""
    from robosuite.utils import transform_utils as T
    turn = np.array([0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)])
    return T.quat_multiply(turn, quat_xyzw)
