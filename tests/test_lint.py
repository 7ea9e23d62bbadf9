import shutil
import subprocess
import sys

import pytest

from .conftest import REPO


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(REPO / ".venv" / "bin" / "ruff")
    try:
        r = subprocess.run([ruff, "check", "zeusseg", "tests", "scripts"], cwd=REPO,
                           capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("ruff not installed")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sys.version_info >= (3, 10)
