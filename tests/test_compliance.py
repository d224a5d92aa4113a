"""Our three services pass the public compliance suite (worldenv.client.compliance)."""
import pytest

from servers import serving
from worldenv.client import compliance


@pytest.fixture(scope="module", autouse=True)
def _servers(request):
    with serving("world-model") as wm, serving("reflector") as rf, serving("policy") as po:
        TestWorldModel.address, TestReflector.address, TestPolicy.address = wm.address, rf.address, po.address
        yield


class TestWorldModel(compliance.WorldModelCompliance):
    pass


class TestReflector(compliance.ReflectorCompliance):
    pass


class TestPolicy(compliance.PolicyCompliance):
    pass
