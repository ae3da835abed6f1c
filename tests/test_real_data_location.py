"""The tests find the real dataset where the environment says."""

from __future__ import annotations

import os

from support.direct_calls import run_python


def test_real_data_location_comes_from_the_environment(tmp_path):
    script = "import sys; sys.path.insert(0, 'tests'); import conftest; print(conftest.REAL_DATA)"
    env = {**os.environ, "BONEFRAC_TEST_DATA": str(tmp_path / "my data")}
    result = run_python(script, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(tmp_path / "my data")
