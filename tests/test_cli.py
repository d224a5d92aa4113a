"""The command line: settings classes as flags, one-line errors with exit code 2."""
from __future__ import annotations

import pytest

from worldenv import cli


def test_invalid_settings_exit_2_naming_each_flag(capsys):
    assert cli.main(["rollout", "--episodes", "0", "--eta", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("worldenv rollout: error: ") and err.count("\n") == 1
    assert "--episodes: must be >= 1" in err and "--eta: must be < 1.0" in err


def test_field_descriptions_and_defaults_are_the_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["rollout", "--help"])
    out = capsys.readouterr().out
    assert "rollouts per start state (default: 8)" in out


def _subparsers(parser):
    """Every parser under `parser`, depth first (`train rl`, `demos collect`, ...)."""
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from _subparsers(sub)


def test_every_commands_help_renders_and_a_percent_in_a_description_stays_one():
    parsers = list(_subparsers(cli.build_parser()))
    assert len(parsers) > 20
    texts = {p.prog: p.format_help() for p in parsers}                   # raised on a bare % before
    assert "39 % of ratios clipped" in " ".join(texts["worldenv train rl"].split())


def test_positional_fields_and_flag_aliases():
    parser = cli.build_parser()
    args = parser.parse_args(["health", "redis", "redis://x", "--timeout", "1"])
    assert (args.kind, args.target, args.timeout) == ("redis", "redis://x", 1.0)
    for flag in ("--env-processes", "--workers"):
        assert parser.parse_args(["eval", "--policy", "expert", "--out", "x", flag, "1"]).env_processes == 1


def test_bool_flags_leave_unset_values_to_the_defaults():
    parser = cli.build_parser()
    assert parser.parse_args(["up"]).exit is None
    assert parser.parse_args(["up", "--exit"]).exit is True
    assert parser.parse_args(["demos", "collect", "--no-every-step"]).every_step is False


def test_a_missing_command_module_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "worldenv.commands.nonexistent"])
    with pytest.raises(ModuleNotFoundError, match="nonexistent"):
        cli.build_parser()


def test_rollout_starts_from_the_bank_the_stack_serves(tmp_path, monkeypatch):
    # `worldenv rollout` and `worldenv up --rollout` default to the same bank: the running stack's
    import json

    from worldenv import checkpoints
    from worldenv.rl import rollout
    monkeypatch.setenv("WORLDENV_HOME", str(tmp_path))
    shipped = checkpoints.starts()
    assert rollout.default_starts() == (str(shipped) if shipped else None), "no stack: the shipped keyframes"
    (tmp_path / "up.json").write_text(json.dumps({"redis_url": "redis://x", "starts": "/banks/own.npz"}))
    assert rollout.default_starts() == "/banks/own.npz"
    (tmp_path / "up.json").write_text(json.dumps({"redis_url": "redis://x", "starts": None}))
    assert rollout.default_starts() is None, "a stack on random init serves synthetic start states"


def test_train_rl_publishes_to_the_policy_the_running_stack_recorded(tmp_path, monkeypatch):
    # `worldenv up --free-ports` takes any port: `train rl` must find its policy (and its Redis) there
    import json

    from worldenv.rl.settings import RLConfig
    monkeypatch.setenv("WORLDENV_HOME", str(tmp_path))
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert RLConfig(out=str(tmp_path / "run")).policy_addr == "127.0.0.1:50053", "no stack: the default port"
    (tmp_path / "up.json").write_text(json.dumps({"redis_url": "redis://127.0.0.1:41234/0", "policy": "127.0.0.1:41999"}))
    config = RLConfig(out=str(tmp_path / "run"))
    assert config.policy_addr == "127.0.0.1:41999" and config.redis_url == "redis://127.0.0.1:41234/0"
    assert RLConfig(out=str(tmp_path / "run"), policy_addr="10.0.0.1:50053").policy_addr == "10.0.0.1:50053"


def test_up_refuses_an_episode_store_smaller_than_one_rl_iteration(capsys):
    """The trainer reads each iteration's episodes back from the store: `--rl` with fewer kept than
    one iteration makes is refused before anything starts, naming the field."""
    assert cli.main(["up", "--rl", "2", "--rl-groups", "4", "--group-size", "8", "--max-episodes", "31"]) == 2
    err = capsys.readouterr().err
    assert "max_episodes: 31 is fewer than one --rl iteration's episodes (4 groups x 8)" in err
