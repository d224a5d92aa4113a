"""`python -m worldenv.services.debug_api [--port N ...]`: settings from flags and WORLDENV_* env vars."""
import sys

from worldenv.config import DebugApiConfig

from .server import main

if __name__ == "__main__":
    sys.exit(main(DebugApiConfig(_cli_parse_args=True)))
