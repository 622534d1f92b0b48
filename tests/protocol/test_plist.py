"""Safe plist decoding: formats, size limit, entity refusal, and no parser exception escaping."""

from __future__ import annotations

import plistlib
import random
import struct
from pathlib import Path

import pytest
from apple_schema import require_shared

from pomona.protocol import plist
from pomona.protocol.errors import PlistError, PlistTooLargeError, ProtocolError

CAPTURES = ("Authenticate.1", "Authenticate.2", "TokenUpdate.1", "TokenUpdate.2", "DeviceInformation.1")


def capture(name: str) -> bytes:
    return require_shared("vectors", "micromdm+nanomdm", "mdm", "testdata", f"{name}.plist").read_bytes()


def _binary_plist(objects: list[bytes], top: int = 0) -> bytes:
    """A hand-made binary plist (1-byte offsets and refs) from already-encoded objects."""
    body = b"bplist00"
    offsets = []
    for obj in objects:
        offsets.append(len(body))
        body += obj
    table = len(body)
    body += bytes(offsets)
    body += struct.pack(">6xBBQQQ", 1, 1, len(objects), top, table)
    return body


class TestLoads:
    @pytest.mark.parametrize("name", CAPTURES)
    def test_real_captures_decode_to_dicts(self, name: str) -> None:
        """Every real device capture decodes to a dictionary with string keys."""
        d = plist.loads(capture(name))
        assert isinstance(d, dict) and d and all(isinstance(k, str) for k in d)

    def test_binary_plist_decodes_like_xml(self) -> None:
        """A binary plist decodes to the same dictionary as its XML form."""
        xml = capture("TokenUpdate.1")
        binary = plistlib.dumps(plistlib.loads(xml), fmt=plistlib.FMT_BINARY)
        assert plist.loads(binary) == plist.loads(xml)

    def test_bytearray_and_memoryview_accepted(self) -> None:
        """Bytes-like bodies are accepted as well as bytes."""
        body = capture("Authenticate.1")
        assert plist.loads(bytearray(body)) == plist.loads(memoryview(body)) == plist.loads(body)

    @pytest.mark.parametrize("value", [[1, 2], "text", 3, True, b"data"])
    def test_non_dict_top_level_refused(self, value: object) -> None:
        """A plist whose top level is not a dictionary is a PlistError."""
        with pytest.raises(PlistError):
            plist.loads(plistlib.dumps(value))

    @pytest.mark.parametrize("body", [b"", b"   \n", b"not a plist", b"<plist><dict><key>a</key></plist>"])
    def test_garbage_refused(self, body: bytes) -> None:
        """Empty, non-plist and malformed XML bodies are PlistErrors."""
        with pytest.raises(PlistError):
            plist.loads(body)

    def test_non_bytes_refused(self) -> None:
        """A str body is refused rather than guessed at."""
        with pytest.raises(PlistError):
            plist.loads("<plist/>")  # type: ignore[arg-type]

    def test_errors_are_protocol_and_value_errors(self) -> None:
        """PlistError belongs to the protocol error tree and is a ValueError."""
        assert issubclass(PlistTooLargeError, PlistError)
        assert issubclass(PlistError, ProtocolError)
        assert issubclass(ProtocolError, ValueError)


class TestSizeLimit:
    def test_body_at_the_limit_is_accepted(self) -> None:
        """A body exactly max_size bytes long is parsed."""
        body = capture("Authenticate.1")
        assert plist.loads(body, max_size=len(body))["MessageType"] == "Authenticate"

    def test_body_over_the_limit_is_refused_before_parsing(self) -> None:
        """One byte over max_size raises PlistTooLargeError carrying the sizes."""
        body = capture("Authenticate.1")
        with pytest.raises(PlistTooLargeError) as info:
            plist.loads(body, max_size=len(body) - 1)
        assert (info.value.size, info.value.max_size) == (len(body), len(body) - 1)

    def test_default_limit_is_one_mebibyte(self) -> None:
        """The default limit refuses a body just over 1 MiB."""
        body = plistlib.dumps({"Pad": "x" * plist.DEFAULT_MAX_SIZE})
        with pytest.raises(PlistTooLargeError):
            plist.loads(body)


class TestEntities:
    BILLION_LAUGHS = (
        b'<?xml version="1.0"?>\n<!DOCTYPE plist [\n<!ENTITY a "aaaaaaaaaa">\n'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">\n]>\n'
        b"<plist><dict><key>MessageType</key><string>&c;</string></dict></plist>"
    )

    def test_internal_subset_refused(self) -> None:
        """A DOCTYPE with entity declarations (billion laughs) is refused."""
        with pytest.raises(PlistError):
            plist.loads(self.BILLION_LAUGHS)

    def test_entity_refused_in_utf16_body(self) -> None:
        """Entity declarations are refused even in a UTF-16 body the byte scan cannot read."""
        body = self.BILLION_LAUGHS.replace(
            b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-16"?>'
        )
        with pytest.raises(PlistError):
            plist.loads(body.decode().encode("utf-16"))

    def test_external_entity_refused(self) -> None:
        """An external entity declaration (file read attempt) is refused."""
        body = (
            b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<plist><dict><key>a</key><string>&x;</string></dict></plist>"
        )
        with pytest.raises(PlistError):
            plist.loads(body)

    def test_unterminated_doctype_refused(self) -> None:
        """A DOCTYPE that never closes is refused."""
        with pytest.raises(PlistError):
            plist.loads(b"<?xml version='1.0'?><!DOCTYPE plist")

    def test_apple_doctype_accepted(self) -> None:
        """Apple's standard DOCTYPE (no internal subset) is accepted."""
        assert plist.loads(capture("Authenticate.2"))["DeviceName"] == "Fruit"


class TestHostileBinary:
    def test_self_referencing_array_refused(self) -> None:
        """A binary plist whose array contains itself is a PlistError, not a crash."""
        body = _binary_plist([b"\xa1\x00"])  # object 0: an array of one element, object 0
        with pytest.raises(PlistError):
            plist.loads(body)

    def test_deep_nesting_refused(self) -> None:
        """A binary plist nested deeper than the recursion limit is a PlistError."""
        depth = 5000
        # Arrays of one element, each pointing to the next (2-byte refs, 4-byte offsets).
        body = b"bplist00"
        offsets: list[int] = []
        for i in range(depth):
            offsets.append(len(body))
            body += b"\xa1" + struct.pack(">H", i + 1)
        offsets.append(len(body))
        body += b"\x08"  # false
        table = len(body)
        body += b"".join(struct.pack(">I", o) for o in offsets)
        body += struct.pack(">6xBBQQQ", 4, 2, depth + 1, 0, table)
        with pytest.raises(PlistError):
            plist.loads(body)

    def test_bad_trailer_refused(self) -> None:
        """A binary plist with a corrupt trailer is a PlistError."""
        with pytest.raises(PlistError):
            plist.loads(b"bplist00" + b"\xff" * 40)


class TestFuzz:
    @pytest.mark.parametrize("name", CAPTURES)
    def test_every_truncation_is_a_plist_error_or_a_dict(self, name: str) -> None:
        """Cutting a capture anywhere never lets a parser exception escape."""
        body = capture(name)
        for end in range(len(body)):
            try:
                assert isinstance(plist.loads(body[:end]), dict)
            except PlistError:
                pass

    @pytest.mark.parametrize("fmt", ["xml", "binary"])
    def test_random_byte_flips_are_plist_errors_or_dicts(self, fmt: str) -> None:
        """Random single-byte corruption never lets a parser exception escape."""
        body = capture("TokenUpdate.1")
        if fmt == "binary":
            body = plistlib.dumps(plistlib.loads(body), fmt=plistlib.FMT_BINARY)
        rng = random.Random(1234)
        for _ in range(3000):
            mutated = bytearray(body)
            mutated[rng.randrange(len(body))] = rng.randrange(256)
            try:
                assert isinstance(plist.loads(bytes(mutated)), dict)
            except PlistError:
                pass


class TestDumps:
    def test_round_trip(self) -> None:
        """dumps then loads gives back the same dictionary."""
        d: dict[str, object] = {"B": b"\x00\x01", "A": [1, 2.5, True, "x"], "C": {"D": "e"}}
        assert plist.loads(plist.dumps(d)) == d

    def test_xml_with_sorted_keys(self) -> None:
        """The output is an XML plist with keys in sorted order."""
        out = plist.dumps({"b": 1, "a": 2})
        assert out.startswith(b"<?xml") and out.index(b"<key>a</key>") < out.index(b"<key>b</key>")

    @pytest.mark.parametrize("value", [None, {1, 2}, 2**64])
    def test_unencodable_values_raise_plist_error(self, value: object) -> None:
        """None, sets and out-of-range integers raise PlistError."""
        with pytest.raises(PlistError):
            plist.dumps({"k": value})

    def test_capture_survives_reencoding(self) -> None:
        """A real capture re-encoded by dumps decodes to the same dictionary."""
        d = plist.loads(capture("TokenUpdate.1"))
        assert plist.loads(plist.dumps(d)) == d


class TestSharedLocation:
    def test_shared_is_the_repo_sibling(self) -> None:
        """The reference material is looked up next to the repository root."""
        assert require_shared().parent == Path(__file__).resolve().parents[2].parent
