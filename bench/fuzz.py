"""Fuzz every parser reachable without a credential, then the whole admin API.

    python bench/fuzz.py [--inputs N] [--api-examples M] [--seed S]

Parsers (tests/fuzz/targets.py): N inputs each (default 100,000), mutated from the seeds (the shared
captures and our own codecs' output) or random; per parser it prints the inputs, the failures outside the
documented error tree (with the first few), and the slowest input in ms (the ten slowest are timed again
five times each and their best times compared: one slow timing can be the machine).

Admin API: schemathesis over the whole OpenAPI document, in process (the ASGI app over a fresh SQLite
database, with a valid server-wide admin token), M examples per operation; it prints the count of 500
responses and the operations that gave them.

Exit status 1 when any parser failure or any 500 was found. Prints the machine it ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import importlib.util
import io
import logging
import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from _common import ROOT, machine  # puts tests/ on sys.path

# tests/fuzz/targets.py, loaded by path: this script is itself a module named "fuzz".
_spec = importlib.util.spec_from_file_location("fuzz_targets", ROOT / "tests" / "fuzz" / "targets.py")
assert _spec is not None and _spec.loader is not None
_targets = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_targets"] = _targets
_spec.loader.exec_module(_targets)
TARGETS, Target, feed = _targets.TARGETS, _targets.Target, _targets.feed

INTERESTING = (b"\x00", b"\xff", b"\x80", b"<", b">", b"(", b")", b",", b";", b"=", b"0", b"9", b"-1", b"\n")


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        if not data:
            data.extend(rng.randbytes(rng.randint(1, 32)))
            continue
        i = rng.randrange(len(data))
        op = rng.randrange(7)
        if op == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[i] = rng.randrange(256)
        elif op == 2:
            data[i:i] = rng.choice(INTERESTING) * rng.randint(1, 4)
        elif op == 3:
            del data[i : i + rng.randint(1, 64)]
        elif op == 4:
            del data[i:]
        elif op == 5:
            data[i:i] = rng.randbytes(rng.randint(1, 16))
        else:  # a repeated span: long tokens, deep nesting, many separators
            span = data[i : i + rng.randint(1, 16)]
            data[i:i] = span * rng.randint(2, 4000 // max(1, len(span)))
    return bytes(data)


def _timed(target: Target, data: bytes) -> float:
    t0 = time.perf_counter()
    feed(target, data)
    return time.perf_counter() - t0


def fuzz_parser(target: Target, n: int, rng: random.Random) -> tuple[int, list[str], float, bytes]:
    seeds = target.seeds()
    failures: list[str] = []
    kinds: Counter[str] = Counter()
    top: list[tuple[float, bytes]] = []  # the ten slowest (seconds, input), a min-heap
    for _ in range(n):
        r = rng.random()
        if r < 0.85:
            data = mutate(rng, rng.choice(seeds))
        elif r < 0.97:
            data = rng.randbytes(rng.randint(0, 512))
        else:  # now and then a big one: 64 KiB of a repeated seed slice
            seed = rng.choice(seeds)
            data = (seed[: rng.randint(1, max(1, len(seed)))] * 65536)[:65536]
        t0 = time.perf_counter()
        escaped = feed(target, data)
        elapsed = time.perf_counter() - t0
        if len(top) < 10:
            heapq.heappush(top, (elapsed, data))
        elif elapsed > top[0][0]:
            heapq.heapreplace(top, (elapsed, data))
        if escaped is not None:
            kind = f"{type(escaped).__name__}: {str(escaped)[:120]}"
            if kinds[kind] == 0:
                failures.append(f"{kind} on {data[:80]!r}")
            kinds[kind] += 1
    # A single slow timing may be the machine (a GC pause, another process): the ten slowest inputs are
    # timed again five times each, and the slowest of their best times is the figure.
    retimed = []
    for _, data in heapq.nlargest(10, top):
        best = min(_timed(target, data) for _ in range(5))
        retimed.append((best, data))
    slowest, slowest_input = max(retimed)
    return n, [f"{kinds[f.split(' on ')[0]]}x {f}" for f in failures], slowest * 1000, slowest_input


def fuzz_api(examples: int) -> tuple[int, int, Counter[str]]:
    """schemathesis over every operation of the admin API: (cases, 500 responses, operations with 500s)."""
    warnings.filterwarnings("ignore")
    logging.getLogger("pomona").setLevel(logging.CRITICAL)  # the 500s are counted here, not logged
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    from helpers import setup_tenant
    from pomona.app import Settings, build, create_app

    data_dir = Path(tempfile.mkdtemp(prefix="pomona-fuzz-"))
    p = build(Settings(data_dir=data_dir, public_url="https://pomona.test"))
    setup_tenant(p, "acme")
    admin = p.admin.create_api_token(None).secret  # server-wide
    app = create_app(pomona=p)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    # The document declares the bearer scheme: without this, negative cases drop our token (401 at once)
    # instead of reaching the operation with bad inputs. Authentication has its own tests.
    schema.config.generation.update(with_security_parameters=False)
    headers = {"Authorization": f"Bearer {admin}"}
    where: Counter[str] = Counter()
    statuses: Counter[int] = Counter()

    def check(strategy: Any, label: str) -> None:
        """Up to ``examples`` cases of one operation in one mode; a 500 (or an exception) is counted."""

        @settings(
            max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            if "tenant" in (case.path_parameters or {}) and rng_keep.random() < 0.7:
                case.path_parameters["tenant"] = "acme"  # mostly a tenant that exists
            try:
                status = case.call(headers=headers).status_code
            except Exception:  # noqa: BLE001 - an exception out of the app is a 500 too
                status = 500
            statuses[status] += 1
            if status >= 500:
                where[f"{label} -> {status}"] += 1

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # hypothesis' seed notes on Unsatisfiable
                run()
        except Unsatisfiable:
            pass  # no negative case exists for an operation without inputs

    for op in [result.ok() for result in schema.get_all_operations()]:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            check(op.as_strategy(generation_mode=mode), f"{op.method.upper()} {op.path} ({mode.value})")
    p.close()
    print(f"admin API statuses: {dict(sorted(statuses.items()))}")
    return sum(statuses.values()), sum(where.values()), where


rng_keep = random.Random(7)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs per parser (default 100000)")
    ap.add_argument(
        "--api-examples",
        type=int,
        default=100,
        help="schemathesis examples per API operation and mode (positive, negative)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", help="fuzz only this parser (or 'api')")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # cryptography's deprecation notes on mutated certificates
    print(f"machine: {machine()}")
    rng = random.Random(args.seed)
    bad = 0
    print(f"{'parser':<18}{'inputs':>9}{'failures':>10}{'slowest ms':>12}  slowest input")
    for target in TARGETS:
        if args.only and args.only != target.name:
            continue
        t0 = time.perf_counter()
        n, failures, slowest_ms, slowest_input = fuzz_parser(target, args.inputs, rng)
        count = sum(int(f.split("x ", 1)[0]) for f in failures)
        bad += count
        shown = f"{len(slowest_input)} bytes {slowest_input[:40]!r}"
        print(
            f"{target.name:<18}{n:>9}{count:>10}{slowest_ms:>12.2f}  {shown}  ({time.perf_counter() - t0:.0f} s)"
        )
        for f in failures[:5]:
            print(f"    {f}")
    if not args.only or args.only == "api":
        t0 = time.perf_counter()
        cases, errors, where = fuzz_api(args.api_examples)
        print(
            f"admin API (schemathesis): {cases} cases, {errors} responses 500 ({time.perf_counter() - t0:.0f} s)"
        )
        for w, c in where.most_common():
            print(f"    {c}x {w}")
        bad += errors
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
