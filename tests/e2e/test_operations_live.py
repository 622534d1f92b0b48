"""Operations under a real `pomona serve` process: JSON logs with the access log (no secret in any line),
and /metrics, from one process and summed over several workers (PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import TenantSetup, free_port, setup_tenant
from pomona.app import Settings, build
from pomona.domain.reasons import ReasonCode
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice


class Served:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path, setup: TenantSetup) -> None:
        self.url, self.proc, self.log, self.setup = url, proc, log, setup

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.log.read_text()


def serve(data_dir: Path, database_url: str | None, *args: str, env: dict[str, str]) -> Served:
    """A tenant set up with one single-use link, then `pomona serve ARGS` with the environment `env`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    p = build(Settings(data_dir=data_dir, database_url=database_url, public_url=url))
    try:
        setup = setup_tenant(p, "acme", uses=1)
    finally:
        p.close()
    full = {k: v for k, v in os.environ.items() if not k.startswith(("POMONA_", "PROMETHEUS_"))}
    full.update(env)
    if database_url:
        full["POMONA_DATABASE_URL"] = database_url
    log = data_dir / "stderr.log"
    cmd = [sys.executable, "-m", "pomona", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen([*cmd, *args], env=full, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Served(url, proc, log, setup)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()}")


def enroll_then_refuse(s: Served) -> int:
    """One device enrolls with the single-use link, a second is refused with it: the requests made."""
    first = VirtualDevice(s.setup.enroll_url)
    second = VirtualDevice(s.setup.enroll_url)
    try:
        first.enroll()
        with pytest.raises(EnrollmentRefused) as refused:
            second.enroll()
        assert refused.value.reason == ReasonCode.ENROLLMENT_TOKEN_INVALID.value
        return first.requests + second.requests
    finally:
        first.close()
        second.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (x.name, frozenset(x.labels.items())): x.value
        for fam in text_string_to_metric_families(text)
        for x in fam.samples
    }


@pytest.fixture
def stop_after() -> Iterator[list[Served]]:
    servers: list[Served] = []
    yield servers
    for s in servers:
        s.stop()


class TestJsonLogs:
    def test_json_lines_one_access_line_per_request_and_no_secret(
        self, tmp_path: Path, stop_after: list[Served]
    ) -> None:
        """With POMONA_LOG_FORMAT=json and the access log on, every stderr line is one JSON object; each
        request has one `request` line (method, path, status, duration_ms, request_id), the refusal a
        `refusal` line with its reason; the link's token and the admin token appear in no line."""
        env = {"POMONA_LOG_FORMAT": "json", "POMONA_ACCESS_LOG": "1"}
        s = serve(tmp_path, None, env=env)
        stop_after.append(s)
        made = enroll_then_refuse(s)
        auth = {"Authorization": f"Bearer {s.setup.admin_token}"}
        api = httpx.get(f"{s.url}/api/v1/tenants/acme/devices", headers=auth)
        assert api.status_code == 200
        text = s.stop()
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # fails on a non-JSON line
        assert any(x["event"] == "serving" and x["public_url"] == s.url for x in lines)
        requests = [x for x in lines if x["event"] == "request" and x["path"] != "/healthz"]
        assert len(requests) == made + 1
        for x in requests:
            assert {"method", "path", "status", "duration_ms", "request_id", "timestamp"} <= set(x)
            assert len(x["request_id"]) == 16 and x["duration_ms"] >= 0
        enroll = [x for x in requests if x["path"].startswith("/enroll/")]
        assert [x["path"] for x in enroll] == ["/enroll/[redacted]"] * 2
        assert [x["status"] for x in enroll] == [200, 403]
        (refusal,) = [x for x in lines if x["event"] == "refusal"]
        assert refusal["reason"] == ReasonCode.ENROLLMENT_TOKEN_INVALID.value
        assert refusal["request_id"] == enroll[1]["request_id"]
        secret = s.setup.enroll_url.rsplit("/", 1)[-1]
        assert secret not in text and s.setup.admin_token not in text

    def test_console_format_by_default(self, tmp_path: Path, stop_after: list[Served]) -> None:
        """Without POMONA_LOG_FORMAT the lines are for people (not JSON) and the access log is off."""
        s = serve(tmp_path, None, env={})
        stop_after.append(s)
        enroll_then_refuse(s)
        text = s.stop()
        assert "reason=ENROLLMENT_TOKEN_INVALID" in text  # the refusal line
        assert "/enroll/" not in text  # no access log: no request line at all
        assert not any(line.startswith("{") for line in text.splitlines())


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200, r.text
    return samples(r.text)


def count(got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return got.get((name, frozenset(labels.items())), 0.0)


class TestMetricsLive:
    def test_one_process(self, tmp_path: Path, stop_after: list[Served]) -> None:
        """A live server's /metrics (from loopback) counts the enrollment and the refusal by reason."""
        s = serve(tmp_path, None, env={})
        stop_after.append(s)
        enroll_then_refuse(s)
        got = scrape(s.url)
        reason = ReasonCode.ENROLLMENT_TOKEN_INVALID.value
        assert count(got, "pomona_refusals_total", reason=reason, step="profile") == 1
        assert count(got, "pomona_enrollments_completed_total") == 1

    def test_several_workers_are_summed(self, tmp_path: Path, pg_url: str, stop_after: list[Served]) -> None:
        """Under `serve --workers 2` (PostgreSQL), every scrape shows the sum over the workers, whichever
        answers it: 40 requests spread over both are all counted, in each of several scrapes."""
        s = serve(tmp_path, pg_url, "--workers", "2", env={})
        stop_after.append(s)
        enroll_then_refuse(s)
        for _ in range(40):
            httpx.get(f"{s.url}/healthz")  # new connections: uvicorn's workers share the socket
        files = list((tmp_path / "metrics").glob("*.db"))
        assert files, "no multiprocess files: the workers kept their counters to themselves"
        for _ in range(4):
            got = scrape(s.url)
            route: dict[str, Any] = {"route": "/healthz", "method": "GET", "status": "200"}
            assert count(got, "pomona_http_requests_total", **route) >= 40
            assert count(got, "pomona_enrollments_completed_total") == 1
            reason = ReasonCode.ENROLLMENT_TOKEN_INVALID.value
            assert count(got, "pomona_refusals_total", reason=reason, step="profile") == 1
