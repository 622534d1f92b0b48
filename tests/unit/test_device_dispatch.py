"""Which command-channel bodies the server keeps on its event loop (http/root.py, looks_idle)."""

from __future__ import annotations

from pomona.http.root import looks_idle
from pomona.protocol.command import encode_report


class TestLooksIdle:
    def test_idle_and_results(self) -> None:
        """An Idle report reads as Idle (it stays on the event loop); a report of any other status does not."""
        assert looks_idle(encode_report(udid="U1", status="Idle"))
        for status in ("Acknowledged", "Error", "CommandFormatError", "NotNow"):
            assert not looks_idle(encode_report(udid="U1", status=status, command_uuid="C1"))
