#!/usr/bin/env python3
"""Diagnose accuracy: the matrix of tests/accuracy.py, printed.

    .venv/bin/python bench/diagnose_accuracy.py [--db sqlite|postgres] [--wrong 20]

For every refusal code a device can hit, the refusal is reproduced through virtual devices (each case in
its own tenant), then diagnosed with every message it could show, with none, in English and Chinese, by
user, by serial and by both; the twin (cause absent) must never answer with the code. Then every founding
document row with a device-side cause. Prints one row per case (right/total per lookup) and the total;
exits 1 below 100%. The "n/a" cells are lookups by serial for a device refused before it sent its serial.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import drop_pg_database, fresh_pg_database, machine
from starlette.testclient import TestClient

from accuracy import DEVICE_ROWS, REFUSALS, Matrix, run_device_row, run_refusal
from diag_helpers import SERVER_HOST, World, Zone
from helpers import setup_tenant
from pomona.app import Settings, build, create_app


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--wrong", type=int, default=20, help="How many wrong cells to list.")
    args = ap.parse_args()
    print(machine())
    zone = Zone()
    tmp = Path(tempfile.mkdtemp(prefix="pomona-accuracy-"))
    pg = fresh_pg_database() if args.db == "postgres" else None
    p = build(
        Settings(
            data_dir=tmp,
            database_url=pg,
            public_url=f"https://{SERVER_HOST}",
            dns_server=f"127.0.0.1:{zone.port}",
        )
    )
    clock = p.diagnose.clock
    matrix = Matrix()
    started = time.perf_counter()
    cases: list[tuple[str, object, bool]] = [
        (c, c, present) for c in sorted(REFUSALS) for present in (True, False)
    ]
    cases += [
        (f"{r.message}/{r.reproduce.__name__}", r, present) for r in DEVICE_ROWS for present in (True, False)
    ]
    try:
        with TestClient(create_app(pomona=p), base_url=f"https://{SERVER_HOST}") as client:  # type: ignore[arg-type]
            for i, (name, case, present) in enumerate(cases):
                w = World(p, client, zone, setup_tenant(p, f"t{i}", uses=50))
                w.dns_ok()
                p.diagnose.clock = clock
                if isinstance(case, str):
                    run_refusal(w, matrix, case, present)
                else:
                    run_device_row(w, matrix, case, present)  # type: ignore[arg-type]
                mine = [c for c in matrix.cells if c.case == name and c.present == present]
                by: dict[str, Counter[str]] = {}
                for c in mine:
                    k = by.setdefault(c.lookup, Counter())
                    k["n/a" if not c.applicable else "right" if c.right else "wrong"] += 1
                cols = "  ".join(
                    f"{lk}: {k['right']}/{k['right'] + k['wrong']}"
                    + (f" (n/a {k['n/a']})" if k["n/a"] else "")
                    for lk, k in by.items()
                )
                label = f"{name} {'present' if present else 'twin'}"
                print(f"{label:<62} {cols}", flush=True)
    finally:
        p.close()
        zone.stop()
        if pg:
            drop_pg_database(pg)
    total = len(matrix.applicable)
    right = total - len(matrix.wrong)
    na = len(matrix.cells) - total
    print(
        f"\nright {right}/{total} = {100.0 * right / max(total, 1):.1f}%  "
        f"({na} cells not applicable; {time.perf_counter() - started:.0f} s, {args.db})"
    )
    for c in matrix.wrong[: args.wrong]:
        print(
            f"  WRONG {c.case} present={c.present} message={c.message} by={c.lookup} {c.lang}: {c.answer} {c.verdict}"
        )
    return 0 if right == total and total else 1


if __name__ == "__main__":
    sys.exit(main())
