"""decode_inventory: the DeviceInformation answers Pomona keeps, from a real capture and our own reports."""

from __future__ import annotations

import pytest
from apple_schema import require_shared

from pomona.protocol.command import (
    DEVICE_INFORMATION_QUERIES,
    INVENTORY_KEYS,
    decode_inventory,
    decode_report,
    encode_report,
)

UDID = "00008110-000A1C3E0C38801E"


def report(responses: object) -> bytes:
    return encode_report(
        udid=UDID, status="Acknowledged", command_uuid="C-1", payload={"QueryResponses": responses}
    )


class TestRealCapture:
    def test_capture_without_kept_answers(self) -> None:
        """The Mac's DeviceInformation capture answers only HostName and UDID: nothing Pomona keeps."""
        path = require_shared("vectors", "micromdm+nanomdm", "mdm", "testdata") / "DeviceInformation.1.plist"
        decoded = decode_report(path.read_bytes())
        assert set(decoded.payload["QueryResponses"]) == {"HostName", "UDID"}  # type: ignore[arg-type]
        assert decode_inventory(decoded) == {}


class TestDecodeInventory:
    def test_every_kept_answer(self) -> None:
        """Each kept answer lands under its inventory name; numbers become floats."""
        decoded = decode_report(
            report(
                {
                    "ProductName": "iPhone15,2",
                    "Model": "MQ0T3LL/A",
                    "ModelName": "iPhone",
                    "DeviceName": "Ana's iPhone",
                    "OSVersion": "17.4",
                    "BuildVersion": "21E219",
                    "SerialNumber": "F2LXK0ABCD12",
                    "IMEI": "35 674108 123456 1",
                    "MEID": "35674108123456",
                    "DeviceCapacity": 128,
                    "BatteryLevel": 0.5,
                    "WiFiMAC": "aa:bb:cc:dd:ee:ff",
                }
            )
        )
        assert decode_inventory(decoded) == {
            "product_name": "iPhone15,2",
            "model": "MQ0T3LL/A",
            "model_name": "iPhone",
            "device_name": "Ana's iPhone",
            "os_version": "17.4",
            "build_version": "21E219",
            "serial": "F2LXK0ABCD12",
            "imei": "35 674108 123456 1",
            "meid": "35674108123456",
            "capacity_gb": 128.0,
            "battery_level": 0.5,
        }

    @pytest.mark.parametrize(
        ("answers", "kept"),
        [
            ({"DeviceCapacity": True, "BatteryLevel": "0.5"}, {}),
            ({"OSVersion": 17, "SerialNumber": b"F2LX"}, {}),
            ({"BatteryLevel": 1, "OSVersion": "17.4"}, {"battery_level": 1.0, "os_version": "17.4"}),
        ],
        ids=["bool-and-text-for-numbers", "numbers-and-data-for-text", "int-for-a-float"],
    )
    def test_wrongly_typed_answers_are_left_out(
        self, answers: dict[str, object], kept: dict[str, object]
    ) -> None:
        """An answer of the wrong type is skipped, not refused: a boolean is no number, a number no text."""
        assert decode_inventory(decode_report(report(answers))) == kept

    @pytest.mark.parametrize("responses", [None, ["ProductName"], "x"], ids=["absent", "array", "string"])
    def test_no_query_responses(self, responses: object) -> None:
        """A report without a QueryResponses dictionary has no inventory (None, not empty)."""
        payload = {} if responses is None else {"QueryResponses": responses}
        raw = encode_report(udid=UDID, status="Acknowledged", command_uuid="C-1", payload=payload)
        assert decode_inventory(decode_report(raw)) is None

    def test_kept_keys_are_device_information_queries(self) -> None:
        """Every kept answer is a query DeviceInformation can ask (the query list is Apple's schema's)."""
        assert set(INVENTORY_KEYS) <= DEVICE_INFORMATION_QUERIES
