"""The import contracts of pyproject.toml hold: the server imports from the edge down to
the store, and the client package never imports the server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'clients' / 'python'}"}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy_of_the_tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "authority", tmp_path / "authority", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "clients" / "python" / "authority_client", tmp_path / "clients" / "python" / "authority_client",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    root = _copy_of_the_tree(tmp_path)
    with (root / "authority" / "sessions.py").open("a") as module:
        module.write("\nfrom authority.api import servicer  # noqa\n")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "authority.sessions -> authority.api.servicer" in result.stdout


def test_the_client_importing_the_server_breaks_a_contract(tmp_path: Path) -> None:
    root = _copy_of_the_tree(tmp_path)
    with (root / "clients" / "python" / "authority_client" / "types.py").open("a") as module:
        module.write("\nimport authority.config  # noqa\n")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "authority_client.types -> authority.config" in result.stdout
