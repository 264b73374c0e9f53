"""bench/workers.py at its tiny size: it starts ``serve --workers`` 1 and 2, loads both, and
reports the rates, the per-process CPU shares and the fsync ceiling. (Whether both workers
got connections is not asserted: four connections all land on one worker 1 time in 8.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_workers_benchmark_runs_and_reports_its_numbers() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.workers", "--tiny"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for name in ("ValidateToken warm, --workers 1", "ValidateToken warm, --workers 2",
                 "IssueToken replacing a device, SQLite, --workers 1", "IssueToken replacing a device, SQLite, --workers 2",
                 "fdatasync of a 4 KiB append", "SQLite durable commits per second at most"):
        assert name in out, out
    phases = [line for line in out.splitlines() if "'calls': " in line]
    assert len(phases) == 4 and all("'errors': 0," in line for line in phases), phases
    assert all("'cpu_share_per_process': [" in line for line in phases), phases
