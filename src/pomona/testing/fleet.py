"""Run a fleet of virtual devices against a server: a load test and a deployment check.

``run_fleet()`` starts ``devices`` virtual devices on ``concurrency`` worker threads. Each worker thread
owns one ``httpx.Client`` (HTTP keep-alive on), so a worker's devices reuse its connections. Each device
enrolls, then runs ``rounds`` command-loop connections (``poll()``). Every HTTP request is counted,
failed ones included. The result is a ``FleetSummary``.

How a device failure is named in ``FleetSummary.failed_by_reason``:

- the server refused: the server's reason code (``ENROLLMENT_TOKEN_INVALID``, ``SCEP_FAILURE:badRequest`` ...);
- the server answered something a real device rejects: ``SERVER_MISBEHAVED:<step>``;
- the network failed: ``TIMEOUT`` or ``NETWORK_ERROR``;
- anything else is a bug on our side: ``CLIENT_ERROR:<ExceptionType>``.

Only the first failure of a device counts; a device that enrolled and then failed a command round is
counted both in ``enrolled`` and in ``failed_by_reason``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import httpx

from pomona.testing.keypool import KeyPool
from pomona.testing.virtual_device import (
    EnrollmentRefused,
    ServerMisbehaved,
    VirtualDevice,
    VirtualDeviceError,
)

__all__ = ["DeviceResult", "FleetSummary", "classify_failure", "percentile", "run_fleet", "serial_for"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = math.ceil(pos)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def classify_failure(exc: BaseException) -> str:
    """The name a failure is counted under (see the module docstring)."""
    if isinstance(exc, EnrollmentRefused):
        return exc.reason
    if isinstance(exc, ServerMisbehaved):
        return f"SERVER_MISBEHAVED:{exc.step}"
    if isinstance(exc, VirtualDeviceError):
        return f"DEVICE_ERROR:{exc.step}"
    if isinstance(exc, httpx.TimeoutException):
        return "TIMEOUT"
    if isinstance(exc, httpx.TransportError):
        return "NETWORK_ERROR"
    return f"CLIENT_ERROR:{type(exc).__name__}"


def serial_for(serial: str | None, index: int, total: int) -> str | None:
    """``--serial`` for device ``index``: the serial itself for one device, else prefix + zero-padded index."""
    if serial is None:
        return None
    if total == 1:
        return serial
    return f"{serial}{index:0{len(str(total - 1))}d}"


@dataclass(frozen=True, slots=True)
class DeviceResult:
    """What happened to one device of the fleet."""

    index: int
    udid: str
    serial: str
    enrolled: bool
    failure: str | None
    failed_step: str | None
    detail: str | None
    enroll_seconds: float | None
    commands_answered: int
    requests: int


@dataclass
class FleetSummary:
    """Totals of one fleet run. ``to_json()`` is what ``pomona simulate --json`` prints."""

    requested: int
    enrolled: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    elapsed_s: float = 0.0
    commands_answered: int = 0
    enroll_seconds: list[float] = field(default_factory=list)
    concurrency: int = 1
    rounds: int = 1

    @property
    def failed(self) -> int:
        """How many devices failed (at enrollment or in a command round)."""
        return sum(self.failed_by_reason.values())

    @property
    def ok(self) -> bool:
        """Every device enrolled and ran its rounds without a failure."""
        return self.enrolled == self.requested and not self.failed_by_reason

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def enroll_p50_s(self) -> float | None:
        return percentile(self.enroll_seconds, 50)

    @property
    def enroll_p95_s(self) -> float | None:
        return percentile(self.enroll_seconds, 95)

    def add(self, result: DeviceResult) -> None:
        """Fold one device's result into the totals."""
        self.requests += result.requests
        self.commands_answered += result.commands_answered
        if result.enrolled:
            self.enrolled += 1
        if result.enroll_seconds is not None:
            self.enroll_seconds.append(result.enroll_seconds)
        if result.failure is not None:
            self.failed_by_reason[result.failure] = self.failed_by_reason.get(result.failure, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        def rounded(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "requested": self.requested,
            "enrolled": self.enrolled,
            "failed": dict(sorted(self.failed_by_reason.items())),
            "requests": self.requests,
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_second": round(self.requests_per_second, 1),
            "enroll_p50_s": rounded(self.enroll_p50_s),
            "enroll_p95_s": rounded(self.enroll_p95_s),
            "commands_answered": self.commands_answered,
            "concurrency": self.concurrency,
            "rounds": self.rounds,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)


def _run_one(
    index: int,
    enroll_url: str,
    rounds: int,
    device_kwargs: dict[str, Any],
    client: httpx.Client,
) -> DeviceResult:
    device = VirtualDevice(enroll_url, client=client, **device_kwargs)
    enroll_seconds: float | None = None
    answered = 0
    failure: str | None = None
    failed_step: str | None = None
    detail: str | None = None
    try:
        start = time.perf_counter()
        device.enroll()
        enroll_seconds = time.perf_counter() - start
        for _ in range(rounds):
            if not device.enrolled:  # erased by the server
                break
            answered += len(device.poll())
    except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the fleet
        failure = classify_failure(exc)
        failed_step = getattr(exc, "step", None)
        detail = str(exc)
    return DeviceResult(
        index=index,
        udid=device.udid,
        serial=device.serial,
        enrolled=enroll_seconds is not None,
        failure=failure,
        failed_step=failed_step,
        detail=detail,
        enroll_seconds=enroll_seconds,
        commands_answered=answered,
        requests=device.requests,
    )


def run_fleet(
    enroll_url: str,
    devices: int,
    concurrency: int,
    *,
    rounds: int = 1,
    products: Sequence[str] = ("iPhone15,2",),
    os_version: str = "17.4",
    serial: str | None = None,
    key_pool: KeyPool | None = None,
    verify_tls: bool = True,
    timeout: float = 30.0,
    progress: Callable[[DeviceResult], None] | None = None,
    client_factory: Callable[[], httpx.Client] | None = None,
) -> FleetSummary:
    """Enroll ``devices`` virtual devices, ``concurrency`` at a time, each polling ``rounds`` times.

    ``products`` are assigned round-robin. ``key_pool`` provides device keys (fresh keys otherwise).
    ``client_factory`` makes each worker's HTTP client (tests pass one with a ``MockTransport`` or an
    ASGI transport). ``progress`` is called, from the calling thread, after each finished device.
    """
    if devices < 0 or concurrency < 1 or rounds < 0:
        raise ValueError("devices >= 0, concurrency >= 1 and rounds >= 0 are required")
    if not products:
        raise ValueError("at least one product is required")
    workers = max(1, min(concurrency, devices or 1))
    summary = FleetSummary(requested=devices, concurrency=workers, rounds=rounds)
    local = threading.local()
    clients: list[httpx.Client] = []
    clients_lock = threading.Lock()

    def make_client() -> httpx.Client:
        if client_factory is not None:
            return client_factory()
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
        return httpx.Client(verify=verify_tls, timeout=timeout, limits=limits)

    def worker_client() -> httpx.Client:
        client: httpx.Client | None = getattr(local, "client", None)
        if client is None:
            client = make_client()
            local.client = client
            with clients_lock:
                clients.append(client)
        return client

    def job(index: int) -> DeviceResult:
        kwargs: dict[str, Any] = {
            "product": products[index % len(products)],
            "os_version": os_version,
            "serial": serial_for(serial, index, devices),
        }
        if key_pool is not None:
            kwargs["key"] = key_pool.take()
        return _run_one(index, enroll_url, rounds, kwargs, worker_client())

    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pomona-device") as pool:
            futures = [pool.submit(job, i) for i in range(devices)]
            for future in as_completed(futures):
                result = future.result()
                summary.add(result)
                if progress is not None:
                    progress(result)
    finally:
        summary.elapsed_s = time.perf_counter() - start
        for client in clients:
            client.close()
    return summary
