"""Wilson intervals and policy resolution (no simulator needed)."""
from __future__ import annotations

import pytest

from worldenv.sim import policies, report

pytestmark = pytest.mark.libero


def test_wilson_interval_known_values():
    lo, hi = report.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert report.wilson(0, 0) == (0.0, 1.0)
    lo, hi = report.wilson(0, 50)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0.06 < hi < 0.08
    assert report.wilson(50, 50)[1] == 1.0


def test_policy_spec_resolution(tmp_path):
    assert policies.open_source("expert").in_env
    with pytest.raises(policies.PolicyUnavailable, match="no checkpoint"):
        policies.open_source(str(tmp_path))
    with pytest.raises(policies.PolicyUnavailable, match="unreachable"):
        policies.open_source("127.0.0.1:1", connect_timeout_s=0.5)
