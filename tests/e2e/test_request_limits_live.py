"""Under attack by oversized requests, the real server stays responsive: while several clients send a
1 MB header or a 1 MB body to every kind of endpoint (profile download, MDM, SCEP, admin API, portal),
/healthz keeps answering within 100 ms, and each attack gets its 431/413 (or a closed connection)."""

from __future__ import annotations

import socket
import threading
import time

import httpx

from helpers import LiveServer, TenantSetup

MB = 1 << 20
ATTACKERS = 4
ATTACK_SECONDS = 3.0
HEALTHZ_BUDGET_MS = 100.0


def _requests(setup: TenantSetup) -> list[bytes]:
    """One 1 MB header and one 1 MB body request to each endpoint."""
    t = setup.tenant_id
    targets = [
        ("GET", "/enroll/x"),
        ("PUT", f"/mdm/{t}/checkin"),
        ("PUT", f"/mdm/{t}/connect"),
        ("POST", f"/scep/{t}?operation=PKIOperation"),
        ("POST", "/api/v1/tenants"),
        ("POST", f"/portal/{setup.name}/signin"),
    ]
    out = []
    for method, path in targets:
        line = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        out.append(line + b"User-Agent: " + b"(iPhone" * (MB // 7) + b"\r\n\r\n")
        out.append(line + f"Content-Length: {MB}\r\n\r\n".encode() + b"x" * MB)
        out.append(
            line + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % MB + b"x" * MB + b"\r\n0\r\n\r\n"
        )
    return out


def _send(port: int, request: bytes) -> bytes:
    """Send one request on a new connection; the status line of the answer (empty if the server hung up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(request)
        except OSError:
            pass  # the server answered and closed while we were still sending: that is the point
        try:
            return s.recv(64).split(b"\r\n", 1)[0]
        except OSError:
            return b""


def _attack_round(port: int, base_url: str, requests: list[bytes]) -> tuple[list[float], list[bytes]]:
    """One round: ATTACKERS clients send the oversized requests for ATTACK_SECONDS while /healthz is timed.
    The /healthz round-trip times (ms) and the status lines the attackers got."""
    stop = threading.Event()
    statuses: list[bytes] = []

    def attack(offset: int) -> None:
        i = offset
        while not stop.is_set() and i < offset + 500:  # bounded in count and in time
            statuses.append(_send(port, requests[i % len(requests)]))
            i += 1

    latencies: list[float] = []
    with httpx.Client(base_url=base_url, timeout=5) as c:
        assert c.get("/healthz").status_code == 200  # the connection is open before the attack
        threads = [threading.Thread(target=attack, args=(n * 5,)) for n in range(ATTACKERS)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + ATTACK_SECONDS
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                latencies.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.01)
        finally:
            stop.set()
            for th in threads:
                th.join(30)
    return latencies, statuses


class TestUnderAttack:
    def test_healthz_answers_while_oversized_requests_arrive(
        self, live_sqlite: tuple[LiveServer, TenantSetup]
    ) -> None:
        """With 4 clients sending 1 MB headers and bodies to every endpoint, /healthz answers within 100 ms.

        The machine is shared (2 cores, other test processes): a round whose slowest /healthz is over the
        budget is run again, up to 3 rounds, and one round must keep every /healthz under it. Before the
        limits, one such request held the server for seconds: every round failed."""
        server, setup = live_sqlite
        port = int(server.url.rsplit(":", 1)[1])
        requests = _requests(setup)
        worst: list[float] = []
        for _ in range(3):
            latencies, statuses = _attack_round(port, server.url, requests)
            assert len(statuses) >= len(requests), "the attackers did not get through every request"
            answered = [s.split()[1] for s in statuses if s]
            assert set(answered) <= {b"413", b"431", b"400", b"403", b"404"}, set(answered)
            assert b"431" in answered and b"413" in answered
            assert len(latencies) >= 20
            worst.append(max(latencies))
            print(f"/healthz under attack: {len(latencies)} requests, max {worst[-1]:.1f} ms")
            if worst[-1] < HEALTHZ_BUDGET_MS:
                break
        assert min(worst) < HEALTHZ_BUDGET_MS, f"/healthz took {[round(w) for w in worst]} ms under attack"
