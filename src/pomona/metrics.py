"""The server's metrics, in Prometheus's text format (prometheus-client): what ``GET /metrics`` shows.

:class:`PrometheusMetrics` implements the ``Metrics`` port (ports.py): services count what happens
(refusals by reason code, enrollments completed, check-ins, push outcomes) and the HTTP adapter counts
requests by route template. Each instance has its own registry, so several servers in one process (the
tests) do not share counters.

Metrics (docs/operations.md lists them with their labels):

- ``pomona_http_requests_total{route,method,status}`` and ``pomona_http_request_duration_seconds{route}``:
  the route is the template (``/mdm/{tenant}/checkin``, ``/api/v1/tenants/{tenant}/devices``), never the
  raw path, so a scan of random paths adds one series (``unmatched``), not one per path;
- ``pomona_refusals_total{reason,step}``: one per refusal (``ServiceBase.record_failure``), counted
  before the event throttle, so a flood the event log summarises is counted in full here;
- ``pomona_enrollments_completed_total``: a device's first TokenUpdate on an enrollment;
- ``pomona_checkins_total{channel,message_type}``: decoded check-in messages (``checkin``: Authenticate,
  TokenUpdate, ...; ``connect``: the report's status, Idle, Acknowledged, ...);
- ``pomona_push_outcomes_total{outcome}``: what APNs said to each push (delivered, device_permanent,
  tenant_permanent, transient);
- ``pomona_commands_pending`` and ``pomona_push_queue_depth``: read from the database when scraped
  (commands queued or sent and not answered; enrollments waiting for a push).

Several processes (``pomona serve --workers N``): prometheus-client's multiprocess mode. ``serve`` empties
the metrics folder (POMONA_METRICS_DIR, else ``<data dir>/metrics``) and names it in
``PROMETHEUS_MULTIPROC_DIR`` before the workers start (prometheus-client reads it when a worker imports
it); each worker writes its counters there and a scrape, answered by whichever worker gets it, sums every
worker's files. The two gauges are read from the database by the worker that answers, so they are the same
whoever answers. A worker that uvicorn restarts leaves its file: counters only grow, so its counts stay
in the sums, as they should.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["MULTIPROC_ENV", "PrometheusMetrics", "prepare_multiprocess"]

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

#: Latency buckets (seconds): an idle check-in is well under a millisecond, an enrollment profile a few ms.
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Gauges(Collector):
    """The gauges read at scrape time (one query each)."""

    def __init__(self, commands_pending: Callable[[], int], push_queue: Callable[[], int]) -> None:
        self.commands_pending = commands_pending
        self.push_queue = push_queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "pomona_commands_pending",
            "Commands queued or sent and not yet answered by their device.",
            value=self.commands_pending(),
        )
        yield GaugeMetricFamily(
            "pomona_push_queue_depth",
            "Enrollments with a push waiting in the push queue.",
            value=self.push_queue(),
        )


class PrometheusMetrics:
    """The Metrics port on prometheus-client. Label children are cached: counting is a dict look-up and
    an increment under prometheus-client's lock (about a microsecond)."""

    def __init__(
        self,
        commands_pending: Callable[[], int],
        push_queue: Callable[[], int],
        *,
        multiprocess_dir: Path | None = None,
    ) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "pomona_http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self._latency = Histogram(
            "pomona_http_request_duration_seconds", "Time to answer an HTTP request, by route template.",
            ["route"], buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self._refusals = Counter(
            "pomona_refusals", "Refusals by reason code and step.", ["reason", "step"], registry=r
        )
        self._enrollments = Counter(
            "pomona_enrollments_completed",
            "Enrollments completed (the device's first TokenUpdate).",
            registry=r,
        )
        self._checkins = Counter(
            "pomona_checkins", "Check-in messages by channel and message type (or report status).",
            ["channel", "message_type"], registry=r,
        )  # fmt: skip
        self._push = Counter("pomona_push_outcomes", "Pushes by what APNs said.", ["outcome"], registry=r)
        self._gauges = _Gauges(commands_pending, push_queue)
        if self.multiprocess_dir is None:
            r.register(self._gauges)
        self._children: dict[tuple[str, ...], tuple[Counter, Histogram]] = {}
        self._checkin_children: dict[tuple[str, str], Counter] = {}

    # --- counting (the Metrics port) ---------------------------------------------------------------
    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (self._requests.labels(*key), self._latency.labels(route))
        pair[0].inc()
        pair[1].observe(seconds)

    def refusal(self, reason: str, step: str) -> None:
        self._refusals.labels(reason, step).inc()

    def enrollment_completed(self) -> None:
        self._enrollments.inc()

    def checkin(self, channel: str, message_type: str) -> None:
        key = (channel, message_type)
        child = self._checkin_children.get(key)
        if child is None:
            child = self._checkin_children[key] = self._checkins.labels(channel, message_type)
        child.inc()

    def push_outcome(self, outcome: str) -> None:
        self._push.labels(outcome).inc()

    # --- exposition -----------------------------------------------------------------------------------
    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type; in multiprocess mode, every worker's counters summed."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        registry.register(self._gauges)
        return generate_latest(registry), CONTENT_TYPE_LATEST


def prepare_multiprocess(path: Path, env: MutableMapping[str, str]) -> Path:
    """Before `serve` starts several workers: an empty folder for their counters (prometheus-client's
    rule: a previous run's files would be summed into this one's), named in ``env`` as
    PROMETHEUS_MULTIPROC_DIR, which prometheus-client reads when a worker imports it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    env[MULTIPROC_ENV] = str(path)
    return path
