#!/usr/bin/env python3
"""APNs client throughput and client CPU per push, against the APNs emulator in its own process.

    .venv/bin/python bench/apns_client.py [--pushes 10000] [--rounds 3] [--max-streams 500] [--connections 5]

The emulator runs in a child process, so the CPU figure is the client's alone (process time of this
process, which does nothing else while sending). Every push must be delivered. Target for the whole
server: <= 0.5 ms CPU per push; 10,000 pushes well under 10 s on loopback.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import machine

from pomona.push.apns import ApnsClient, Push
from pomona.testing.apns_emulator import ApnsEmulator


def serve(state_dir: str, port_q: mp.Queue) -> None:  # type: ignore[type-arg]
    import asyncio

    emu = ApnsEmulator(Path(state_dir))
    asyncio.run(emu.serve(lambda: port_q.put(emu.port)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pushes", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-streams", type=int, default=500)
    ap.add_argument("--connections", type=int, default=5)
    args = ap.parse_args()

    state_dir = tempfile.mkdtemp(prefix="pomona-bench-apns-")
    ca = ApnsEmulator(Path(state_dir))  # creates the CA and the server identity the child will use
    cert_pem, key_pem = ca.issue_push_cert()
    ca.close()
    port_q: mp.Queue = mp.get_context("spawn").Queue()  # type: ignore[type-arg]
    child = mp.get_context("spawn").Process(target=serve, args=(state_dir, port_q), daemon=True)
    child.start()
    port = port_q.get(timeout=60)

    print(f"machine: {machine()}")
    print(f"pushes per round: {args.pushes}, max_streams {args.max_streams}, connections {args.connections}")
    client = ApnsClient(
        base_url=f"https://127.0.0.1:{port}",
        verify=(Path(state_dir) / "ca.pem").read_bytes(),
        max_streams=args.max_streams,
        connections=args.connections,
    )
    topic = client.set_identity(cert_pem, key_pem).topic
    client.send_sync([Push(os.urandom(32), "warm-up", topic)])  # TLS handshake and pool outside the timing
    try:
        for n in range(1, args.rounds + 1):
            pushes = [Push(os.urandom(32), f"magic-{i}", topic) for i in range(args.pushes)]
            cpu0, t0 = time.process_time(), time.perf_counter()
            results = client.send_sync(pushes)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            outcomes = Counter(r.outcome for r in results)
            print(
                f"round {n}: {args.pushes / wall:,.0f} pushes/s, {wall:.2f} s wall, "
                f"client CPU {cpu / args.pushes * 1000:.3f} ms/push, outcomes {dict(outcomes)}"
            )
            if outcomes["delivered"] != args.pushes:
                sys.exit("not every push was delivered")
    finally:
        client.close()
        child.terminate()
        child.join()


if __name__ == "__main__":
    main()
