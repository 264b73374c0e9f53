"""The contract check: scripts/check-protos passes, and buf catches what it is there for.

The failing cases run buf on a copy of protos/ in a git repository of their own, so a
renumbered, retyped or repurposed field is shown to fail without touching this one.
Without node and npm these tests fail under CI and are skipped, loudly, elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "tools" / "node_modules" / ".bin" / "buf"
CONTRACT = Path("protos/authority/v1/authority.proto")
# Git must not pick up the surrounding repository (a hook's GIT_DIR, say).
GIT_ENV = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True,
        timeout=100,
    )


def _git(repo: Path, *args: str) -> None:
    identity = ["user.name=test", "user.email=test@example.invalid", "commit.gpgsign=false"]
    options = [part for setting in identity for part in ("-c", setting)]
    result = _run("git", *options, *args, cwd=repo)
    assert result.returncode == 0, result.stderr


def _edit(repo: Path, old: str, new: str) -> None:
    path = repo / CONTRACT
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def check_protos() -> subprocess.CompletedProcess[str]:
    """scripts/check-protos, run once; it installs buf into tools/node_modules."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not found: buf cannot check the contract"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip("SKIPPING THE CONTRACT CHECKS: " + reason)
    return _run(ROOT / "scripts" / "check-protos", cwd=ROOT)


@pytest.fixture
def buf(check_protos: subprocess.CompletedProcess[str]) -> Path:
    assert BUF.exists(), check_protos.stderr
    return BUF


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose one commit is the contract as it is now."""
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "protos")
    _git(tmp_path, "commit", "-q", "-m", "contract")
    return tmp_path


def test_check_protos_passes(check_protos: subprocess.CompletedProcess[str]) -> None:
    assert check_protos.returncode == 0, check_protos.stdout + check_protos.stderr


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        # Renumbered: number 1 of IssueTokenRequest is gone.
        ("string subject = 1;", "string subject = 99;", ['"subject"', '"IssueTokenRequest"']),
        # Retyped.
        ("int32 revoked_sessions = 1;", "int64 revoked_sessions = 1;", ['"revoked_sessions"']),
        # Repurposed: the number kept, under another name.
        # (device_name is a field of its own since the device list: another name.)
        ("string device_id = 2;", "string device_label = 2;", ['"device_id"', '"device_label"']),
    ],
    ids=["renumbered", "retyped", "repurposed"],
)
def test_breaking_change_fails(buf: Path, repo: Path, old: str, new: str, named: list[str]) -> None:
    _edit(repo, old, new)
    result = _run(buf, "breaking", "protos", "--against", ".git#ref=HEAD,subdir=protos", cwd=repo)
    assert result.returncode != 0, result.stdout + result.stderr
    for name in named:
        assert name in result.stdout, result.stdout + result.stderr


def test_check_protos_fails_on_a_break_committed_earlier(buf: Path, repo: Path) -> None:
    """A renumber committed, and built on, is still caught against the older commit."""
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    (repo / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "package-lock.json", repo / "tools")
    (repo / "tools" / "node_modules").symlink_to(ROOT / "tools" / "node_modules")
    _edit(repo, "string subject = 1;", "string subject = 99;")
    _git(repo, "commit", "-q", "-am", "renumbered")
    # A number no version of the message will take, so the edit stays valid as it grows.
    _edit(repo, "string reason = 4;", "string reason = 4;\n  string note = 900;")
    _git(repo, "commit", "-q", "-am", "a field added")
    result = _run(repo / "scripts" / "check-protos", cwd=repo)
    assert result.returncode != 0, result.stdout + result.stderr
    assert '"subject" on message "IssueTokenRequest"' in result.stdout, result.stdout + result.stderr


def test_lint_fails(buf: Path, repo: Path) -> None:
    # The zero value of an enum must be its _UNSPECIFIED one.
    _edit(repo, "enum InvalidReason {", "enum Colour {\n  COLOUR_RED = 0;\n}\n\nenum InvalidReason {")
    result = _run(buf, "lint", "protos", "--error-format=json", cwd=repo)
    assert result.returncode != 0, result.stdout + result.stderr
    rules = {json.loads(line)["type"] for line in result.stdout.splitlines()}
    assert rules == {"ENUM_ZERO_VALUE_SUFFIX"}, result.stdout
