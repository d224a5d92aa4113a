"""The `worldenv` subcommands, one module per command (`worldenv.cli` lists them), and settings
as flags (`flags`). The top floor: thin and typed; nothing below imports it."""
