"""The robot's proprio over an imagined episode: a learned dynamics model of the arm, trained on
its own multi-step predictions so that its error does not compound.

Why: the world model's first proprio path (the last proprio + the chunk's position deltas x gain +
a one-step-trained correction) drifts. Replaying real episodes' actions, the eef position was off
by 0.10-0.24 m and the axis-angle by 0.33-0.67 rad after 15 chunks, and the policy, which reads
proprio, then acted as on an unrelated state (`worldenv align`'s action gap, "proprio only").
Three things fix that here:
- **the rotation composes**: the state is (eef position, rotation matrix, gripper qpos); a chunk
  predicts a position delta, a rotation delta (axis-angle, applied on the left as the OSC
  controller does) and a gripper delta. LIBERO's axis-angle flips near pi (theta about n equals
  2 pi - theta about -n), which a correction added to it cannot follow; the matrix never flips;
- **history**: the previous chunk's actions and motion, because the arm carries velocity and the
  gripper takes several steps to close across chunk boundaries;
- **multi-step training** (`worldenv.train.proprio_dynamics`): unrolled over windows of chunks on
  its own predictions, the loss in the features a policy reads, standardised by the dynamics' data
  (and, with `--policy-units`, also by that policy's own standardisation).
"""
from __future__ import annotations

import torch
from torch import nn

from worldenv.models.proprio import FEATURE_DIM, ProprioNorm, axis_angle_to_matrix

DELTA_DIM = 8  # position 3, rotation (axis-angle) 3, gripper 2


def matrix_to_quaternion(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as (w, x, y, z) with w >= 0
    (Shepperd's method: the largest of w, x, y, z as the pivot, stable at every angle)."""
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    trace = m00 + m11 + m22
    candidates = torch.stack([  # 4 * (w, x, y, z) * (its largest component), one row per pivot
        torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22], -1),
    ], dim=-2)                                                                        # (..., 4, 4)
    pivot = torch.stack([trace, m00, m11, m22], -1).argmax(-1)                        # (...,)
    q = torch.gather(candidates, -2, pivot[..., None, None].expand(*pivot.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_quaternion(v: torch.Tensor) -> torch.Tensor:
    """Axis-angle (..., 3), any angle -> (w, x, y, z): LIBERO's quaternion, whose sign its
    axis-angle keeps (an angle above pi is a quaternion with w < 0)."""
    theta = v.norm(dim=-1, keepdim=True)
    axis = v / theta.clamp(min=1e-12)
    return torch.cat([torch.cos(theta / 2), axis * torch.sin(theta / 2)], dim=-1)


def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) -> axis-angle as LIBERO computes it (`quat2axisangle`): angle 2 acos(w) in
    [0, 2 pi], so the quaternion's sign decides between theta about n and 2 pi - theta about -n."""
    w, xyz = q[..., 0].clamp(-1, 1), q[..., 1:]
    return xyz * (2 * torch.acos(w) / xyz.norm(dim=-1).clamp(min=1e-12))[..., None]


def matrix_to_axis_angle(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3) with the angle in [0, pi]."""
    return quaternion_to_axis_angle(matrix_to_quaternion(m))


class ArmState:
    """Proprio as the dynamics carries it: position (B, 3), rotation (B, 3, 3), gripper (B, 2),
    and the rotation's quaternion (B, 4) with the sign LIBERO's axis-angle would have (kept
    continuous along an episode, as the simulator's is), so `raw` speaks LIBERO's convention."""

    def __init__(self, pos: torch.Tensor, rot: torch.Tensor, grip: torch.Tensor, quat: torch.Tensor):
        self.pos, self.rot, self.grip, self.quat = pos, rot, grip, quat

    @classmethod
    def from_raw(cls, proprio: torch.Tensor) -> "ArmState":
        """LIBERO's proprio (B, 8): eef pos, axis-angle, gripper qpos."""
        p = proprio.float()
        return cls(p[:, :3], axis_angle_to_matrix(p[:, 3:6]), p[:, 6:8], axis_angle_to_quaternion(p[:, 3:6]))

    def moved(self, position: torch.Tensor, turn: torch.Tensor, grip: torch.Tensor) -> "ArmState":
        """This state moved by deltas: position (B, 3), a rotation (B, 3, 3) applied on the left, gripper (B, 2)."""
        rot = turn @ self.rot
        quat = matrix_to_quaternion(rot)
        quat = torch.where((quat * self.quat).sum(-1, keepdim=True) < 0, -quat, quat)   # the sign stays continuous
        return ArmState(self.pos + position, rot, self.grip + grip, quat)

    def raw(self) -> torch.Tensor:
        return torch.cat([self.pos, quaternion_to_axis_angle(self.quat), self.grip], dim=-1)

    def features(self) -> torch.Tensor:
        """(B, 11) as `proprio.features`: pos, the rotation's first two columns, gripper."""
        return torch.cat([self.pos, self.rot[..., :2].transpose(-1, -2).flatten(1), self.grip], dim=-1)


def apply(state: ArmState, delta: torch.Tensor) -> ArmState:
    """`state` moved by predicted deltas (B, 8): position, rotation (axis-angle, on the left), gripper."""
    return state.moved(delta[:, :3], axis_angle_to_matrix(delta[:, 3:6]), delta[:, 6:8])


def read(norm: ProprioNorm, state: ArmState) -> torch.Tensor:
    """`state` as a model with this `norm` reads it: standardised features, clamped as `ProprioNorm` does."""
    return ((state.features() - norm.mean) / norm.std).clamp(-10, 10)


class ProprioDynamics(nn.Module):
    """(state, chunk, previous state, previous chunk) -> next state; an MLP on the standardised
    features predicts the chunk's deltas in units of their spread in the training data."""

    def __init__(self, chunk_length: int, action_dim: int, width: int = 256):
        super().__init__()
        self.norm = ProprioNorm()
        self.register_buffer("delta_scale", torch.ones(DELTA_DIM))
        chunk = chunk_length * action_dim
        self.net = nn.Sequential(nn.Linear(2 * (FEATURE_DIM + chunk), width), nn.SiLU(), nn.Linear(width, width),
                                 nn.SiLU(), nn.Linear(width, DELTA_DIM))
        with torch.no_grad():  # start near "nothing moves"
            self.net[-1].weight.mul_(0.1)
            self.net[-1].bias.zero_()

    def standardise(self, state: ArmState) -> torch.Tensor:
        return read(self.norm, state)

    def delta(self, state: ArmState, actions: torch.Tensor, previous: ArmState, previous_actions: torch.Tensor) -> torch.Tensor:
        """The chunk's predicted deltas (B, 8): position, rotation (axis-angle, on the left), gripper."""
        f = self.standardise(state)
        x = torch.cat([f, actions.float().flatten(1), f - self.standardise(previous),
                       previous_actions.float().flatten(1)], dim=-1)
        return self.net(x.to(self.net[0].weight.dtype)).float() * self.delta_scale

    def step(self, state: ArmState, actions: torch.Tensor, previous: ArmState, previous_actions: torch.Tensor) -> ArmState:
        """actions / previous_actions (B, K, A) float32; at an episode's start the previous state
        is the state itself and the previous chunk zeros (the robot at rest after settling)."""
        return apply(state, self.delta(state, actions, previous, previous_actions))

    @torch.no_grad()
    def fit_statistics(self, proprio: torch.Tensor, next_proprio: torch.Tensor) -> None:
        """Feature statistics and delta spreads from (N, 8) raw proprio before and after chunks."""
        self.norm.fit(proprio)
        a, b = ArmState.from_raw(proprio), ArmState.from_raw(next_proprio)
        turn = matrix_to_axis_angle(b.rot @ a.rot.transpose(-1, -2))
        deltas = torch.cat([b.pos - a.pos, turn, b.grip - a.grip], dim=-1)
        self.delta_scale.copy_(deltas.std(0).clamp(min=1e-4))


class DynamicsEnsemble(nn.Module):
    """Several `ProprioDynamics` trained apart (their own initial weights and training windows), one
    step: the mean of their deltas (position, rotation axis-angle, gripper; a chunk's turn is a few
    degrees, where averaging axis-angles is averaging rotations). Why: two dynamics trained on the
    same data by the same recipe, apart only in their seed, moved the closed loop's agreement with
    LIBERO by 20 points; the mean of several draws is one estimate with less of that spread.

    Every member shares the data's statistics (`fit_statistics`), so `norm`, `delta_scale` and
    `standardise` are the first member's, and the training's loss reads the same units in each."""

    def __init__(self, chunk_length: int, action_dim: int, members: int, width: int = 256):
        super().__init__()
        if members < 2:
            raise ValueError(f"members: an ensemble needs at least 2, got {members}")
        self.members = nn.ModuleList(ProprioDynamics(chunk_length, action_dim, width) for _ in range(members))

    @property
    def norm(self) -> ProprioNorm:
        return self.members[0].norm

    @property
    def delta_scale(self) -> torch.Tensor:
        return self.members[0].delta_scale

    def standardise(self, state: ArmState) -> torch.Tensor:
        return self.members[0].standardise(state)

    def step(self, state: ArmState, actions: torch.Tensor, previous: ArmState, previous_actions: torch.Tensor) -> ArmState:
        deltas = torch.stack([m.delta(state, actions, previous, previous_actions) for m in self.members])
        return apply(state, deltas.mean(0))

    @torch.no_grad()
    def fit_statistics(self, proprio: torch.Tensor, next_proprio: torch.Tensor) -> None:
        for m in self.members:
            m.fit_statistics(proprio, next_proprio)


def members(dynamics: ProprioDynamics | DynamicsEnsemble) -> list[ProprioDynamics]:
    """The single dynamics models a proprio dynamics is made of (itself, or an ensemble's members)."""
    return list(dynamics.members) if isinstance(dynamics, DynamicsEnsemble) else [dynamics]


def make(chunk_length: int, action_dim: int, members: int = 1) -> ProprioDynamics | DynamicsEnsemble:
    """A fresh proprio dynamics: one model, or an ensemble of `members`."""
    return ProprioDynamics(chunk_length, action_dim) if members == 1 else DynamicsEnsemble(chunk_length, action_dim, members)
