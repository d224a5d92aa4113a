"""The `worldenv` subcommands, one module per command (`worldenv.cli` lists them), and the
helpers only they use."""
