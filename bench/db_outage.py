"""What a database outage costs an idle `pomona serve`: its PostgreSQL database is dropped under it (WITH
FORCE), then for ``--seconds`` the server's CPU time and what it writes to its log (stderr to a file, as
journald gets it: not a terminal) are measured. Prints CPU seconds per second, log lines and bytes,
tracebacks, the outage's warning lines, and the load average beside them.

    PYTHONPATH=src python bench/db_outage.py [--seconds 20] [--pg postgresql://postgres@127.0.0.1/postgres]

To compare with another version, run it with that version's src on PYTHONPATH (the server is
``python -m pomona``), back to back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from _common import drop_pg_database, fresh_pg_database, live, machine, total_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument(
        "--pg", default=os.environ.get("POMONA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = ap.parse_args()
    load = os.getloadavg()
    url = fresh_pg_database(args.pg)
    if url is None:
        raise SystemExit(2)
    server = None
    try:
        server, _ = live(url)
        time.sleep(2.0)  # started: the push worker and the leases run
        logged = server.log.stat().st_size
        drop_pg_database(args.pg, url)
        cpu0, t0 = total_cpu(server), time.monotonic()
        time.sleep(args.seconds)
        cpu, wall = total_cpu(server) - cpu0, time.monotonic() - t0
        with server.log.open("rb") as f:
            f.seek(logged)
            text = f.read().decode("utf-8", "replace")
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.data_dir, ignore_errors=True)
        drop_pg_database(args.pg, url)
    print(machine())
    print(
        "load average before / after: {:.2f} {:.2f} {:.2f} / {:.2f} {:.2f} {:.2f}".format(
            *load, *os.getloadavg()
        )
    )
    print(f"database dropped, measured for {wall:.1f} s")
    print(f"server CPU: {cpu:.2f} s ({100 * cpu / wall:.1f}% of a core)")
    print(f"log: {len(text.splitlines())} lines, {len(text.encode())} bytes")
    print(f"tracebacks: {text.count('Traceback')}, frames' locals boxes: {text.count(' locals ')}")
    print(f"'did not answer' lines: {text.count('did not answer')}; the first lines:")
    for line in text.splitlines()[:3]:
        print(f"  {line[:150]}")


if __name__ == "__main__":
    main()
