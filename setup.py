"""Build hook: generate the gRPC stubs from protos/ before packaging.

The stubs are a build product (never edited by hand): `python -m worldenv.wire.gen` is the one
command that writes them into worldenv/v1/, and every build (wheel or editable) runs it here,
before the package list is computed, so worldenv.v1 is always part of the distribution.
"""
import pathlib
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = pathlib.Path(__file__).parent
subprocess.run([sys.executable, str(ROOT / "worldenv" / "wire" / "gen.py")], check=True)

packages = find_packages(include=["worldenv", "worldenv.*"])
packages += ["worldenv.services"] + ["worldenv.services." + p for p in find_packages("services")]
packages += ["worldenv.client"] + ["worldenv.client." + p for p in find_packages("client")]

setup(packages=sorted(packages))
