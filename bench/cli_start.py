"""CLI start-up: CPU and wall time of `pomona` commands, each run as a fresh process (issue 14, item 4).

Prints, per command, the median over N runs of the child's CPU time (user + system, from os.wait4)
and its wall time, with the machine line and the load average beside them. The data folders are
SQLite, made (and migrated) before the runs: an empty one, and one with 3 tenants and a user.

Targets (issue 14): `pomona --version` under 100 ms and `pomona tenant list` under 300 ms of wall time
on an empty database.

    PYTHONPATH=src python bench/cli_start.py [--runs 5]

The sources are byte-compiled first (as an installed package is): a process that compiles every module
it imports measures the compiler, not the start-up.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine  # noqa: E402


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """One `python -m pomona ARGS`: (CPU seconds of the child, wall seconds, exit status)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pomona", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, wall, proc.returncode


def setup(env: dict[str, str], data: Path) -> None:
    def cli(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "pomona", *args, "--data-dir", str(data)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    for name in ("acme", "globex", "initech"):
        cli("tenant", "create", name, "--domain", f"{name}.example")
    cli("user", "create", "--tenant", "acme", "--upn", "ana@acme.example")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="Runs per command (the median is printed).")
    opts = ap.parse_args()

    compileall.compile_dir(str(ROOT / "src"), quiet=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POMONA_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with tempfile.TemporaryDirectory(prefix="pomona-cli-bench-") as tmp:
        empty, full = Path(tmp) / "empty", Path(tmp) / "full"
        subprocess.run(
            [sys.executable, "-m", "pomona", "tenant", "list", "--data-dir", str(empty)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )  # made and migrated
        setup(env, full)
        cases = [
            ("pomona --version", ["--version"]),
            ("pomona --help", ["--help"]),
            ("pomona tenant list (empty)", ["tenant", "list", "--data-dir", str(empty)]),
            ("pomona tenant list --json (3)", ["tenant", "list", "--json", "--data-dir", str(full)]),
            (
                "pomona events --tenant acme --json",
                ["events", "--tenant", "acme", "--json", "--data-dir", str(full)],
            ),
            (
                "pomona diagnose (small tenant)",
                [
                    "diagnose",
                    "--tenant",
                    "acme",
                    "--user",
                    "ana@acme.example",
                    "--json",
                    "--data-dir",
                    str(full),
                ],
            ),
        ]
        print(f"machine: {machine()}")
        print(
            f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
        )
        print(f"{'command':<40} {'CPU ms':>8} {'wall ms':>8}  (median of {opts.runs}; exit)")
        for label, args in cases:
            cpu, wall, codes = [], [], set()
            for _ in range(opts.runs):
                c, w, code = run(args, env)
                cpu.append(c)
                wall.append(w)
                codes.add(code)
            exits = ",".join(str(c) for c in sorted(codes))
            print(
                f"{label:<40} {statistics.median(cpu) * 1000:8.0f} {statistics.median(wall) * 1000:8.0f}  ({exits})"
            )
        print(
            f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
        )


if __name__ == "__main__":
    main()
