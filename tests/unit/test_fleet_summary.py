"""The fleet simulator's summary maths, failure names and bookkeeping."""

from __future__ import annotations

import json

import httpx
import pytest

from pomona.testing.fleet import (
    DeviceResult,
    FleetSummary,
    classify_failure,
    percentile,
    run_fleet,
    serial_for,
)
from pomona.testing.keypool import KeyPool
from pomona.testing.virtual_device import EnrollmentRefused, NotEnrolledError, ServerMisbehaved


def _result(
    *,
    enrolled: bool = True,
    failure: str | None = None,
    seconds: float | None = 0.5,
    commands: int = 0,
    requests: int = 6,
) -> DeviceResult:
    return DeviceResult(
        index=0,
        udid="00008120-001A2B3C4D5E6F70",
        serial="F2LXQ0Q0Q0Q0",
        enrolled=enrolled,
        failure=failure,
        failed_step=None,
        detail=None,
        enroll_seconds=seconds if enrolled else None,
        commands_answered=commands,
        requests=requests,
    )


class TestPercentile:
    def test_empty_is_none(self) -> None:
        """No samples give no percentile."""
        assert percentile([], 50) is None

    def test_single_sample(self) -> None:
        """One sample is every percentile."""
        assert percentile([2.0], 50) == 2.0
        assert percentile([2.0], 95) == 2.0

    def test_median_of_even_count_interpolates(self) -> None:
        """p50 of an even number of samples is the mean of the middle two."""
        assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)

    def test_p95_of_one_to_hundred(self) -> None:
        """p95 of 1..100 is 95.05 by linear interpolation."""
        assert percentile([float(i) for i in range(1, 101)], 95) == pytest.approx(95.05)

    def test_bounds(self) -> None:
        """p0 and p100 are the minimum and the maximum."""
        assert percentile([3.0, 1.0, 2.0], 0) == 1.0
        assert percentile([3.0, 1.0, 2.0], 100) == 3.0

    def test_out_of_range_is_refused(self) -> None:
        """A percentile outside 0..100 is a ValueError."""
        with pytest.raises(ValueError):
            percentile([1.0], 101)


class TestFleetSummary:
    def test_add_accumulates_counts(self) -> None:
        """Results add up enrolled devices, requests, commands and failures by reason."""
        summary = FleetSummary(requested=4)
        summary.add(_result(seconds=1.0, commands=2))
        summary.add(_result(seconds=3.0, commands=1, requests=8))
        summary.add(_result(enrolled=False, failure="ENROLLMENT_TOKEN_INVALID", requests=1))
        summary.add(_result(enrolled=False, failure="ENROLLMENT_TOKEN_INVALID", requests=1))
        assert summary.enrolled == 2
        assert summary.requests == 16
        assert summary.commands_answered == 3
        assert summary.failed_by_reason == {"ENROLLMENT_TOKEN_INVALID": 2}
        assert summary.failed == 2
        assert summary.enroll_p50_s == pytest.approx(2.0)

    def test_requests_per_second(self) -> None:
        """Requests per second is requests over elapsed seconds, and 0 when nothing elapsed."""
        summary = FleetSummary(requested=1, requests=300, elapsed_s=2.0)
        assert summary.requests_per_second == pytest.approx(150.0)
        assert FleetSummary(requested=1, requests=5).requests_per_second == 0.0

    def test_ok_needs_every_device_enrolled_without_failure(self) -> None:
        """A run is OK only when all requested devices enrolled and none failed later."""
        summary = FleetSummary(requested=2)
        summary.add(_result())
        assert not summary.ok
        summary.add(_result())
        assert summary.ok
        summary.add(_result(failure="UNKNOWN_ENROLLMENT"))
        assert not summary.ok

    def test_json_shape(self) -> None:
        """to_json() carries the documented keys, with failures under "failed"."""
        summary = FleetSummary(requested=2, elapsed_s=0.5, concurrency=2, rounds=3)
        summary.add(_result(seconds=0.25))
        summary.add(_result(enrolled=False, failure="OS_VERSION_TOO_LOW"))
        data = json.loads(summary.to_json())
        assert data == {
            "requested": 2,
            "enrolled": 1,
            "failed": {"OS_VERSION_TOO_LOW": 1},
            "requests": 12,
            "elapsed_s": 0.5,
            "requests_per_second": 24.0,
            "enroll_p50_s": 0.25,
            "enroll_p95_s": 0.25,
            "commands_answered": 0,
            "concurrency": 2,
            "rounds": 3,
        }

    def test_json_without_enrollments_has_null_percentiles(self) -> None:
        """With no enrolled device the enrollment percentiles are null."""
        data = json.loads(FleetSummary(requested=1).to_json())
        assert data["enroll_p50_s"] is None
        assert data["enroll_p95_s"] is None


class TestClassifyFailure:
    @pytest.mark.parametrize(
        ("exc", "name"),
        [
            (EnrollmentRefused("profile", 403, "ENROLLMENT_TOKEN_INVALID"), "ENROLLMENT_TOKEN_INVALID"),
            (EnrollmentRefused("scep", 200, "SCEP_FAILURE:badRequest"), "SCEP_FAILURE:badRequest"),
            (ServerMisbehaved("profile", "bad signature"), "SERVER_MISBEHAVED:profile"),
            (NotEnrolledError("command", "wiped"), "DEVICE_ERROR:command"),
            (httpx.ConnectTimeout("slow"), "TIMEOUT"),
            (httpx.ConnectError("refused"), "NETWORK_ERROR"),
            (RuntimeError("bug"), "CLIENT_ERROR:RuntimeError"),
        ],
    )
    def test_names(self, exc: BaseException, name: str) -> None:
        """Each kind of failure is counted under its documented name."""
        assert classify_failure(exc) == name


class TestSerialFor:
    def test_one_device_uses_the_serial_as_is(self) -> None:
        """With one device --serial is the serial number itself."""
        assert serial_for("F2LXQ0Q0Q0Q0", 0, 1) == "F2LXQ0Q0Q0Q0"

    def test_many_devices_use_it_as_a_prefix(self) -> None:
        """With several devices --serial is a prefix followed by the zero-padded index."""
        assert [serial_for("F2LX", i, 100) for i in (0, 7, 99)] == ["F2LX00", "F2LX07", "F2LX99"]

    def test_no_serial(self) -> None:
        """Without --serial every device gets a random serial (None here)."""
        assert serial_for(None, 3, 10) is None


class TestRunFleet:
    def test_refusals_are_counted_by_reason(self) -> None:
        """Every device refused at the profile step is counted under the server's reason code."""
        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.path)
            return httpx.Response(
                403, json={"reason": "ENROLLMENT_TOKEN_INVALID", "message": "no", "request_id": "r"}
            )

        progress: list[DeviceResult] = []
        summary = run_fleet(
            "https://mdm.test/enroll/expired",
            4,
            2,
            key_pool=KeyPool.in_memory(4, key_size=1024),
            client_factory=lambda: httpx.Client(transport=httpx.MockTransport(handler)),
            progress=progress.append,
        )
        assert summary.requested == 4
        assert summary.enrolled == 0
        assert summary.failed_by_reason == {"ENROLLMENT_TOKEN_INVALID": 4}
        assert summary.requests == len(seen) == 4
        assert len(progress) == 4
        assert summary.concurrency == 2
        assert not summary.ok

    def test_network_failures_are_counted(self) -> None:
        """Requests that never reach a server are counted, and so are the devices they fail."""

        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

        summary = run_fleet(
            "https://mdm.test/enroll/t",
            3,
            3,
            key_pool=KeyPool.in_memory(3, key_size=1024),
            client_factory=lambda: httpx.Client(transport=httpx.MockTransport(handler)),
        )
        assert summary.failed_by_reason == {"NETWORK_ERROR": 3}
        assert summary.requests == 3

    def test_bad_arguments_are_refused(self) -> None:
        """A fleet needs at least one worker."""
        with pytest.raises(ValueError):
            run_fleet("https://mdm.test/enroll/t", 1, 0)
