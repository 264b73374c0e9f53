"""What a report says besides the numbers (machine, versions, command), the goals the
numbers are held against, and the readable table."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Goal:
    """One target from the issue, and whether this run met it."""

    name: str
    target: str
    measured: float | None
    unit: str
    passed: bool | None  # None: not measured
    note: str = ""

    def row(self) -> tuple[str, str, str, str]:
        shown = "-" if self.measured is None else f"{self.measured:,.2f}{self.unit}"
        result = "not measured" if self.passed is None else ("pass" if self.passed else "MISS")
        return (self.name, self.target, shown, result)


def at_least(name: str, measured: float, target: float, unit: str = "×", note: str = "") -> Goal:
    """A goal that ``measured`` be at least ``target``."""
    return Goal(name, f">= {target:,g}{unit}", measured, unit, measured >= target, note)


def at_most(name: str, measured: float, target: float, unit: str, note: str = "") -> Goal:
    """A goal that ``measured`` be at most ``target``."""
    return Goal(name, f"<= {target:,g}{unit}", measured, unit, measured <= target, note)


def not_measured(name: str, target: str, needs: str) -> Goal:
    """A placeholder for a measurement whose parts are not built yet."""
    return Goal(name, target, None, "", None, f"not measured yet: needs {needs}")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def load_average() -> str:
    """The machine's 1, 5 and 15-minute load averages: other work competes for the cores."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def environment(command: list[str], postgres_version: str) -> dict[str, Any]:
    """The machine, the versions and the command line of this run."""
    versions = {"python": platform.python_version(), "postgresql": postgres_version, "commit": _commit()}
    for package in ("token-authority", "grpcio", "protobuf", "PyJWT", "cryptography", "SQLAlchemy", "asyncpg",
                    "aiosqlite", "prometheus-client", "aiohttp"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "host": socket.gethostname(),
            "cpu": _cpu(),
            "cores": os.cpu_count(),
            "memory": _memory(),
            "os": f"{platform.system()} {platform.release()}",
        },
        "versions": versions,
        "command": " ".join(command),
        "python_executable": sys.executable,
    }


def _table(rows: list[tuple[str, ...]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Table:
    """One table of the readable report: the rows kept under ``key`` in the JSON report
    (a map from each row's name to its numbers), shown under ``header``."""

    key: str
    header: tuple[str, ...]  # the first column names the row
    cells: Callable[[dict[str, Any]], tuple[str, ...]]  # a row's numbers -> the other columns
    right: frozenset[int] = frozenset()  # columns aligned right


# Every table the readable report shows, in order. A measurement with rows of a new
# kind registers its table with :func:`table` and fills ``run.rows(key)``; rows of an
# existing kind (a phase under load: ``throughput``) need nothing registered.
TABLES: list[Table] = []


def table(key: str, header: tuple[str, ...], cells: Callable[[dict[str, Any]], tuple[str, ...]],
          right: tuple[int, ...] = ()) -> Table:
    """Registers a table (replacing one with the same key) and returns it."""
    entry = Table(key, header, cells, frozenset(right))
    TABLES[:] = [t for t in TABLES if t.key != key] + [entry]
    return entry


table("throughput", ("measurement", "per second", "p50 ms", "p99 ms", "server CPU us/call", "calls", "errors"),
      lambda r: (f"{r['per_second']:,.0f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
                 f"{r['server_cpu_us_per_call']:,.0f}", f"{r['calls']:,}", str(r["errors"])),
      right=(1, 2, 3, 4, 5, 6))
table("floor", ("against the floor, by server CPU per call", "us/call", "floor us/call", "ratio", "target", "result"),
      lambda r: (f"{r['us_per_call']:,.0f}", f"{r['floor_us_per_call']:,.0f}", f"{r['ratio']:.2f}x",
                 r["target"], r["result"]),
      right=(1, 2, 3))
table("in_process", ("in-process (this process, one thread)", "per second", "us per call", "calls"),
      lambda r: (f"{r['per_second']:,.0f}", f"{r['us_per_call']:.2f}", f"{r['calls']:,}"), right=(1, 2, 3))
table("visibility", ("revocation visibility", "samples", "p50 ms", "p99 ms", "max ms"),
      lambda r: (str(r["samples"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['max_ms']:.2f}"),
      right=(1, 2, 3, 4))


def render(report: dict[str, Any]) -> str:
    """The report as a readable table (what the README carries)."""
    env = report["environment"]
    machine, versions = env["machine"], env["versions"]
    out = [
        f"token-authority benchmark, {env['date']}",
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}, {machine['os']}",
        "versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"command: {env['command']}",
        f"load: {report['size']['workers']} client processes x {report['size']['concurrency']} calls in flight, "
        f"{report['size']['seconds']:g} s per phase, {report['size']['rounds']} interleaved round(s), loopback; "
        f"server log level {report['size']['server_log_level']}",
        f"load average before / after the run: {report['load_average']['before']} / {report['load_average']['after']}",
        "",
    ]
    for entry in TABLES:
        rows = report.get(entry.key)
        if not rows:
            continue
        shown: list[tuple[str, ...]] = [entry.header]
        shown += [(name, *entry.cells(result)) for name, result in rows.items()]
        out.append(_table(shown, set(entry.right)))
        out.append("")
    facts = report["facts"]
    out.append(_table([("fact", "value")] + [(name, value) for name, value in facts.items()], set()))
    out.append("")
    goal_rows: list[tuple[str, ...]] = [("goal", "target", "measured", "result")]
    goal_rows += [Goal(**goal).row() for goal in report["goals"]]
    out.append(_table(goal_rows, {2}))
    notes = [f"- {goal['name']}: {goal['note']}" for goal in report["goals"] if goal["note"]]
    if notes:
        out.append("")
        out.extend(notes)
    return "\n".join(out)
