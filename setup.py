"""Build hook: generate the gRPC stubs from protos/ before packaging.

The stubs are a build product (never edited by hand): `python -m worldenv.wire.gen`
is the one command that writes them, and every install (wheel or editable) runs it.
"""
import pathlib
import subprocess
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).parent


def generate_stubs() -> None:
    subprocess.run([sys.executable, str(ROOT / "worldenv" / "wire" / "gen.py")], check=True)


class BuildPyWithStubs(build_py):
    def run(self):
        generate_stubs()
        super().run()


# worldenv.v1 (generated stubs) is listed explicitly: it may not exist yet when this runs.
packages = sorted(set(find_packages(include=["worldenv", "worldenv.*"])) | {"worldenv.v1"})
packages += ["worldenv.services"] + ["worldenv.services." + p for p in find_packages("services")]
packages += ["worldenv.client"] + ["worldenv.client." + p for p in find_packages("client")]

setup(packages=packages, cmdclass={"build_py": BuildPyWithStubs})
