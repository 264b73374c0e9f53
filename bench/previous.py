"""An earlier version of the authority, for comparisons in one run: exported from git
(``git archive``) into the run's directory and served from there with this
environment's interpreter and dependencies, so only the code differs."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def export(ref: str, into: Path) -> tuple[Path, str]:
    """The source tree of ``ref`` under ``into``, and the commit it names."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if commit.returncode != 0:
        raise RuntimeError(f"--sign-in-baseline: {ref!r} is not a commit of {ROOT}")
    sha = commit.stdout.strip()
    archive = into / "source.tar"
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "archive", "--output", str(archive), sha], cwd=ROOT, check=True)
    tree = into / sha[:12]
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    archive.unlink()
    return tree, sha
