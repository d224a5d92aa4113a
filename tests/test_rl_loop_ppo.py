"""LOOP's pure functions on hand-computed examples."""
import pytest
import torch

from worldenv.rl import loop_ppo


def test_leave_one_out_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    adv = loop_ppo.leave_one_out(rewards)
    assert torch.allclose(adv[0], torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3]))
    assert torch.equal(adv[1], torch.zeros(4)), "equal rewards in a group give zero advantage"
    assert loop_ppo.zero_advantage_fraction(rewards) == 0.5
    with pytest.raises(ValueError, match="N >= 2"):
        loop_ppo.leave_one_out(torch.ones(3, 1))


def test_advantages_broadcast_over_each_trajectory():
    out = loop_ppo.broadcast(torch.tensor([2.0, -1.0]), torch.tensor([3, 1]))
    assert out.tolist() == [2.0, 2.0, 2.0, -1.0]


def test_ppo_clipping_takes_effect_beyond_one_plus_minus_eps():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.05, 1.3, 0.7, 1.3])).requires_grad_()
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, stats = loop_ppo.ppo_loss(new, old, adv, clip=0.1)
    # per step: min(rho A, clip(rho) A) = 1.05, 1.1 (clipped), -0.9 (clipped), -1.3 (unclipped is lower)
    assert loss.item() == pytest.approx(-(1.05 + 1.1 - 0.9 - 1.3) / 4, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(3 / 4)
    loss.backward()
    assert new.grad[1] == 0 and new.grad[2] == 0, "clipped steps carry no gradient"
    assert new.grad[0] != 0 and new.grad[3] != 0
    same, stats = loop_ppo.ppo_loss(old.clone(), old, adv)
    assert stats["approx_kl"].item() == 0 and stats["clip_fraction"].item() == 0


def test_groups_whose_rewards_barely_differ_are_not_informative():
    rewards = torch.tensor([[0.001, 0.002, 0.0, 0.003], [0.9, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    assert loop_ppo.informative(rewards, 0.05).tolist() == [False, True, False]
    assert loop_ppo.informative(rewards).tolist() == [True, True, False]
    assert loop_ppo.zero_advantage_fraction(rewards, 0.05).item() == pytest.approx(2 / 3)
