"""Counts the SQL statements a bench's server process runs on SQLite (bench/capacity.py puts this folder on
the server's PYTHONPATH and names a file in POMONA_BENCH_SQL_COUNTS; SIGUSR2 writes the counts there).

Every ``sqlite3.connect`` (and ``sqlite3.dbapi2.connect``) gets a trace callback that counts statements by their first word (select,
insert, update, delete, begin, commit...). Nothing happens without the variable.
"""

from __future__ import annotations

import os

_PATH = os.environ.get("POMONA_BENCH_SQL_COUNTS")

if _PATH:
    import json
    import signal
    import sqlite3
    import sqlite3.dbapi2
    from collections import Counter
    from typing import Any

    _counts: Counter[str] = Counter()
    _connect = sqlite3.connect

    def _trace(statement: str) -> None:
        _counts[statement.lstrip()[:8].split(None, 1)[0].lower() if statement.strip() else "other"] += 1

    def _traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = _connect(*args, **kwargs)
        conn.set_trace_callback(_trace)
        return conn

    def _dump(*_: object) -> None:
        tmp = f"{_PATH}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(dict(_counts), f)
        os.replace(tmp, f"{_PATH}.{os.getpid()}")

    # SQLAlchemy's dialect connects through sqlite3.dbapi2; the hot path through sqlite3.
    sqlite3.connect = sqlite3.dbapi2.connect = _traced_connect  # type: ignore[assignment]
    signal.signal(signal.SIGUSR2, _dump)
