"""The package stands alone: nothing of the server unless a test helper is asked for."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import authority_client


def test_no_module_but_testing_imports_the_server() -> None:
    modules = [
        f"authority_client.{m.name}" for m in pkgutil.iter_modules(authority_client.__path__) if m.name != "testing"
    ]
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}];"
        "bad = [m for m in sys.modules if m == 'authority' or m.startswith(('authority.', 'sqlalchemy', 'asyncpg', 'aiosqlite'))];"
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_testing_imports_the_server_only_when_used() -> None:
    code = (
        "import sys, authority_client.testing;"
        "bad = [m for m in sys.modules if m == 'authority' or m.startswith(('authority.', 'sqlalchemy'))];"
        "sys.exit(bool(bad))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
