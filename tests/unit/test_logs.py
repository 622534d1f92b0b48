"""Logging (pomona.logs): one line per refusal with its reason code and request id, the request id on
every line, and the access log only when it is on."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from pomona import logs
from pomona.domain.models import Event, Step
from pomona.domain.reasons import ReasonCode
from pomona.http.middleware import AccessLog, with_access_log
from pomona.services.base import ServiceBase
from pomona.services.context import bind_request_id, current_request_id, reset_request_id
from pomona.settings import LogFormat, Settings

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class FixedClock:
    def now(self) -> datetime:
        return NOW


@dataclass
class MemoryEvents:
    appended: list[Event] = field(default_factory=list)

    def append(self, event: Event) -> None:
        self.appended.append(event)


@dataclass
class EventsOnlyUnitOfWork:
    events: MemoryEvents


@dataclass
class EventsOnlyDatabase:
    """A Database port fake that keeps the events record_failure writes, and nothing else."""

    events: MemoryEvents = field(default_factory=MemoryEvents)

    @contextmanager
    def unit_of_work(self, *, readonly: bool = False) -> Iterator[EventsOnlyUnitOfWork]:
        yield EventsOnlyUnitOfWork(self.events)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the process's logging back as it was after a test that configures it."""
    yield
    logs.reset()


@pytest.fixture
def json_lines(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Logging configured as JSON at info; calling the fixture returns the lines written so far."""
    logs.configure("json", "info")

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]

    yield read


def refusing_service() -> tuple[ServiceBase, MemoryEvents]:
    db = EventsOnlyDatabase()
    return ServiceBase(db, FixedClock()), db.events  # type: ignore[arg-type]


class TestRefusals:
    def test_a_refusal_is_one_line_with_its_reason_and_request_id(self, json_lines: Any) -> None:
        """record_failure writes exactly one `refusal` line: reason, step, tenant, device, request id."""
        service, events = refusing_service()
        token = bind_request_id("rid-refused")
        try:
            service.record_failure(
                "t1", Step.AUTHENTICATE, ReasonCode.CERT_NOT_TRUSTED, udid="U1", serial="S1"
            )
        finally:
            reset_request_id(token)
        lines = [x for x in json_lines() if x["event"] == "refusal"]
        assert len(lines) == 1
        line = lines[0]
        assert line["reason"] == ReasonCode.CERT_NOT_TRUSTED.value
        assert (line["step"], line["tenant"], line["udid"], line["serial"]) == (
            "authenticate",
            "t1",
            "U1",
            "S1",
        )
        assert line["request_id"] == "rid-refused" and line["level"] == "info"
        assert "upn" not in line  # unknown fields are left out
        assert events.appended[0].request_id == "rid-refused"  # the event carries the same id

    def test_a_refusal_outside_a_request_has_no_request_id(self, json_lines: Any) -> None:
        """A refusal outside a request (a background job) still logs, with request_id null."""
        service, _ = refusing_service()
        service.record_failure("t1", Step.PROFILE, ReasonCode.ENROLLMENT_TOKEN_EXPIRED, upn="ana@example.com")
        (line,) = [x for x in json_lines() if x["event"] == "refusal"]
        assert line["reason"] == ReasonCode.ENROLLMENT_TOKEN_EXPIRED.value
        assert line["upn"] == "ana@example.com" and line["request_id"] is None

    def test_refusals_are_not_logged_below_their_level(self, json_lines: Any) -> None:
        """At warning, refusals (info) write no line; the event is still recorded."""
        logs.configure("json", "warning")
        service, events = refusing_service()
        service.record_failure("t1", Step.SCEP, ReasonCode.CERT_NOT_TRUSTED)
        assert json_lines() == [] and len(events.appended) == 1


class TestRequestId:
    def test_every_line_during_a_request_carries_its_id(self, json_lines: Any) -> None:
        """Lines of any logger written while a request id is bound carry it; none after."""
        token = bind_request_id("rid-bound")
        try:
            assert current_request_id() == "rid-bound"
            logging.getLogger("pomona.push").warning("stdlib line")
            logging.getLogger("uvicorn.error").warning("library line")
            structlog.stdlib.get_logger("pomona.test").warning("structlog line")
        finally:
            reset_request_id(token)
        logging.getLogger("pomona.push").warning("after the request")
        lines = {x["event"]: x for x in json_lines()}
        for event in ("stdlib line", "library line", "structlog line"):
            assert lines[event]["request_id"] == "rid-bound"
        assert "request_id" not in lines["after the request"]
        assert current_request_id() is None

    def test_console_format_is_not_json(
        self, restore_logging: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The console format writes key=value text for people."""
        logs.configure("console", "info")
        token = bind_request_id("rid-console")
        try:
            logging.getLogger("pomona.refusal").info("refusal", extra={"reason": "CERT_NOT_TRUSTED"})
        finally:
            reset_request_id(token)
        err = capsys.readouterr().err
        assert "reason=CERT_NOT_TRUSTED" in err and "request_id=rid-console" in err
        assert not err.lstrip().startswith("{")


class TestLazySetUp:
    def test_a_lazy_set_up_writes_the_lines_an_eager_one_writes(
        self, restore_logging: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """configure(lazy=True) (the CLI) writes the same JSON line, level filter and request id as eager."""
        lines = []
        for lazy in (False, True):
            logs.configure("json", "warning", lazy=lazy)
            token = bind_request_id("rid-lazy")
            try:
                logging.getLogger("pomona.refusal").info("not at warning")
                logging.getLogger("pomona.refusal").warning("refusal", extra={"reason": "CERT_NOT_TRUSTED"})
            finally:
                reset_request_id(token)
            (line,) = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
            lines.append({k: v for k, v in line.items() if k != "timestamp"})
        assert lines[0] == lines[1]
        assert lines[1]["reason"] == "CERT_NOT_TRUSTED" and lines[1]["request_id"] == "rid-lazy"


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 204, "headers": [(b"x-request-id", b"rid-answered")]}
    )
    await send({"type": "http.response.body", "body": b""})


def _call(app: Any, method: str, path: str) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(app(scope, receive, send))


class TestAccessLog:
    def test_off_adds_nothing(self, json_lines: Any) -> None:
        """With the access log off the app is not wrapped and writes no request line."""
        assert with_access_log(_ok, False) is _ok
        _call(with_access_log(_ok, False), "GET", "/healthz")
        assert json_lines() == []

    def test_on_writes_one_line_per_request(self, json_lines: Any) -> None:
        """With it on, each request writes one `request` line: method, path, status, duration, request id."""
        app = with_access_log(_ok, True)
        assert isinstance(app, AccessLog)
        _call(app, "PUT", "/mdm/t1/connect")
        (line,) = json_lines()
        assert line["event"] == "request" and line["logger"] == "pomona.access"
        assert (line["method"], line["path"], line["status"]) == ("PUT", "/mdm/t1/connect", 204)
        assert line["request_id"] == "rid-answered" and line["duration_ms"] >= 0

    @pytest.mark.parametrize("enabled", [False, True])
    def test_the_server_logs_requests_only_when_asked(
        self, enabled: bool, tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The server built from settings (POMONA_ACCESS_LOG) writes request lines only when it is on; the
        admin API's request id is the one it answers with."""
        from pomona.asgi import create

        settings = Settings(data_dir=tmp_path, log_format="json", access_log=enabled)
        app = create(settings)

        async def get() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://pomona.test") as client:
                return await client.get("/api/v1/tenants")

        response = asyncio.run(get())
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
        requests = [x for x in lines if x["event"] == "request"]
        if not enabled:
            assert requests == []
            return
        (line,) = requests
        assert (line["method"], line["path"], line["status"]) == (
            "GET",
            "/api/v1/tenants",
            response.status_code,
        )
        assert line["request_id"] == response.headers["x-request-id"] == response.json()["request_id"]

    def test_a_refused_device_request_logs_its_answer_id(
        self, tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A refused check-in writes its refusal line and its request line, both with the request id the
        device was answered with."""
        from pomona.app import build
        from pomona.asgi import create

        settings = Settings(data_dir=tmp_path, log_format="json", access_log=True)
        p = build(settings)
        tenant = p.admin.create_tenant("acme", "acme.example", key_type="p256")
        p.close()
        app = create(settings)

        async def put() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://pomona.test") as client:
                headers = {"content-type": "application/x-apple-aspen-mdm-checkin"}  # and no Mdm-Signature
                return await client.put(f"/mdm/{tenant.id}/checkin", content=b"<plist/>", headers=headers)

        response = asyncio.run(put())
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
        rid = response.headers["x-request-id"]
        (refusal,) = [x for x in lines if x["event"] == "refusal"]
        (request,) = [x for x in lines if x["event"] == "request"]
        assert (
            refusal["reason"] == response.json()["reason"] == ReasonCode.MALFORMED_REQUEST.value
        )  # decoded before the signature
        assert refusal["request_id"] == request["request_id"] == rid
        assert request["status"] == response.status_code


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal (the console format then draws rich tracebacks)."""

    def isatty(self) -> bool:
        return True


def _fail_holding(secret: str) -> None:
    password = secret  # a local of the failing frame, as a database URL or an enrollment token would be
    raise RuntimeError(f"boom after {len(password)} characters")


class TestTracebacks:
    @pytest.mark.parametrize(("format", "terminal"), [("console", False), ("console", True), ("json", False)])
    def test_a_logged_exception_never_shows_its_frames_locals(
        self,
        format: LogFormat,
        terminal: bool,
        restore_logging: None,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """log.exception writes the traceback without any frame's local variables, in every format."""
        secret = "pw-" + secrets.token_hex(8)  # made at run time: no source line shown holds it
        stream = _Terminal()
        if terminal:
            monkeypatch.setattr(sys, "stderr", stream)
        logs.configure(format, "info")
        try:
            _fail_holding(secret)
        except RuntimeError:
            logging.getLogger("pomona.push").exception("push batch failed")
        err = re.sub(r"\x1b\[[0-9;]*m", "", stream.getvalue() if terminal else capsys.readouterr().err)
        assert "push batch failed" in err and "boom after 19 characters" in err  # the traceback is there
        assert "_fail_holding" in err
        assert secret not in err and " locals " not in err  # rich's title of a frame's locals
