"""The package stands alone: nothing of the server, whichever of its modules is imported."""

from __future__ import annotations

import importlib.util
import pkgutil
import subprocess
import sys

import authority_client


def test_no_module_imports_the_server() -> None:
    modules = [m.name for m in pkgutil.walk_packages(authority_client.__path__, "authority_client.")]
    assert "authority_client.local.mirror" in modules
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}];"
        "bad = [m for m in sys.modules if m == 'authority' or m.startswith(('authority.', 'sqlalchemy', 'asyncpg', 'aiosqlite'))];"
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_in_process_authority_is_the_servers() -> None:
    # It runs the server, so it ships with the server (authority.testing), not here.
    assert importlib.util.find_spec("authority_client.testing") is None
    assert importlib.util.find_spec("authority.testing") is not None
