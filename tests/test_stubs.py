"""The committed stubs are what scripts/gen-protos makes from protos/ today."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "clients/python/authority_client/v1"


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts/gen-protos"), str(tmp_path)],
        check=True,
        env={**os.environ, "PYTHON": sys.executable},
    )

    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == ["authority_pb2.py", "authority_pb2.pyi", "authority_pb2_grpc.py"]
    for name in generated:
        assert (tmp_path / name).read_text() == (COMMITTED / name).read_text(), (
            f"{name} is stale: run scripts/gen-protos"
        )


def test_the_client_package_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, authority_client.v1.authority_pb2_grpc;"
        "bad = [m for m in sys.modules if m == 'authority' or m.startswith(('authority.', 'sqlalchemy', 'asyncpg'))];"
        "print(bad); sys.exit(bool(bad))"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout
