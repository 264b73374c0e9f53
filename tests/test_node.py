"""The Node.js package's own suite (clients/node: ``npm test``, which type-checks the
declarations and runs ``node --test``), from pytest, so its result is in pytest's summary.

It installs the package's dependencies from its lock first (scripts/node-deps) and runs
against a real ``authority serve`` from this checkout's .venv. Without Node.js it fails
when ``CI`` is set and is skipped, loudly, otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "node"


# npm ci on a changed lock, tsc and about 45 s of node --test; more on a loaded machine.
@pytest.mark.timeout(600)
def test_the_node_package_suite_passes() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("Node.js and npm are needed for the Node.js package's tests (clients/node)")
        pytest.skip("WARNING: NO NODE.JS: THE NODE.JS PACKAGE (clients/node) IS NOT TESTED")
    subprocess.run([str(ROOT / "scripts" / "node-deps")], check=True, timeout=600)
    env = {**os.environ, "AUTHORITY_BIN": str(Path(sys.executable).parent / "authority")}
    result = subprocess.run(["npm", "test"], cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=600,
                            check=False)
    # node's own report, so a failure shows which test and why.
    assert result.returncode == 0, f"npm test failed:\n{result.stdout[-20000:]}\n{result.stderr[-5000:]}"
    assert "# fail 0" in result.stdout and "# skipped 0" in result.stdout, result.stdout[-5000:]
