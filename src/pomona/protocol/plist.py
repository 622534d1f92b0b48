"""Safe property-list decoding and XML encoding for every body a device sends or receives.

Devices send XML plists (check-in, command reports); some tools send binary plists. :func:`loads` accepts
both, but only after three cheap checks that run before any parsing:

* the body is at most ``max_size`` bytes (:class:`PlistTooLargeError` otherwise);
* an XML body has no DOCTYPE internal subset (``<!DOCTYPE plist [ ... ]>``), so entity declarations and
  entity expansion ("billion laughs") are refused outright; Apple's own DOCTYPE has no internal subset.
  The standard library's plist parser also refuses entity declarations, as a second line of defence;
* the top level is a dictionary, which is what every MDM message is.

Every decoding failure is a :class:`PlistError`: no parser exception escapes.

Reference: https://developer.apple.com/documentation/devicemanagement (message bodies are plists).
"""

from __future__ import annotations

import binascii
import plistlib
import struct
import xml.parsers.expat
from collections.abc import Callable, Mapping
from typing import Protocol

from pomona.protocol.errors import PlistError, PlistTooLargeError

__all__ = ["DEFAULT_MAX_SIZE", "PlistError", "PlistTooLargeError", "dumps", "loads"]

DEFAULT_MAX_SIZE = 1_048_576
"""Default size limit of a plist body: 1 MiB, far above any check-in or ordinary command report."""

_BINARY_MAGIC = b"bplist00"
_DOCTYPE = b"<!DOCTYPE"

# Exceptions the standard library's plist parsers raise on malformed input (found by fuzzing every
# truncation and byte flip of the real captures; see tests/protocol/test_plist.py).
_PARSER_ERRORS: tuple[type[BaseException], ...] = (
    plistlib.InvalidFileException,
    xml.parsers.expat.ExpatError,
    binascii.Error,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
    struct.error,
    UnicodeError,
    LookupError,
    AttributeError,
)


def _check_doctype(body: bytes) -> None:
    """Refuse an XML DOCTYPE that carries an internal subset (where entities are declared)."""
    start = body.find(_DOCTYPE)
    if start < 0:
        return
    end = body.find(b">", start)
    if end < 0:
        raise PlistError("unterminated DOCTYPE declaration")
    declaration = body[start:end]
    if b"[" in declaration:
        raise PlistError("DOCTYPE with an internal subset (entity declarations) is refused")


class _XmlHandlers(Protocol):
    """plistlib's XML plist builder: expat's handlers and the value they build."""

    parser: xml.parsers.expat.XMLParserType
    root: object

    def handle_begin_element(self, element: str, attrs: dict[str, str]) -> None: ...
    def handle_end_element(self, element: str) -> None: ...
    def handle_data(self, data: str) -> None: ...
    def handle_entity_decl(self, *args: object) -> None: ...


_PLISTLIB_XML: Callable[..., _XmlHandlers] | None = getattr(plistlib, "_PlistParser", None)


def _loads_xml(data: bytes) -> object:
    """An XML plist, parsed by ONE expat call over the whole body.

    plistlib feeds expat 2,048 bytes at a time (``ParseFile``), and expat before 2.6 scans an unfinished
    token again from its start at each feed: one long token (a 1 MiB element name) cost 0.4 s of the
    event loop. Fed at once, expat scans each byte once. The handlers are plistlib's own, so the values
    are exactly what ``plistlib.loads`` builds."""
    if _PLISTLIB_XML is None:  # pragma: no cover - a Python without plistlib's private builder
        return plistlib.loads(data, fmt=plistlib.FMT_XML)
    builder = _PLISTLIB_XML(dict_type=dict)
    parser = xml.parsers.expat.ParserCreate()
    builder.parser = parser
    parser.StartElementHandler = builder.handle_begin_element
    parser.EndElementHandler = builder.handle_end_element
    parser.CharacterDataHandler = builder.handle_data
    parser.EntityDeclHandler = builder.handle_entity_decl
    parser.Parse(data, True)
    return builder.root


def loads(body: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> dict[str, object]:
    """Decode an XML or binary plist whose top level is a dictionary.

    Raises :class:`PlistTooLargeError` when ``body`` is longer than ``max_size`` bytes and
    :class:`PlistError` for anything that is not a safe, well-formed plist dictionary.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise PlistError(f"plist body must be bytes, not {type(body).__name__}")
    size = len(body)
    if size > max_size:
        raise PlistTooLargeError(size, max_size)
    data = bytes(body)
    if not data.strip():
        raise PlistError("empty plist body")
    is_binary = data.startswith(_BINARY_MAGIC)
    if not is_binary:
        _check_doctype(data)
    try:
        value = plistlib.loads(data, fmt=plistlib.FMT_BINARY) if is_binary else _loads_xml(data)
    except _PARSER_ERRORS as exc:
        raise PlistError(f"malformed {'binary' if is_binary else 'XML'} plist: {exc}") from exc
    if not isinstance(value, dict):
        raise PlistError(f"top level of the plist must be a dict, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):  # pragma: no cover - plistlib only yields string keys
            raise PlistError("plist dictionary keys must be strings")
    return value


def dumps(obj: Mapping[str, object]) -> bytes:
    """Encode a dictionary as an XML plist (keys sorted, the form devices and Apple tools produce).

    Raises :class:`PlistError` when a value has no plist representation (``None``, a set, a
    non-string key, an integer out of the 64-bit range).
    """
    try:
        return plistlib.dumps(dict(obj), fmt=plistlib.FMT_XML, sort_keys=True)
    except (TypeError, OverflowError, ValueError) as exc:
        raise PlistError(f"value cannot be encoded as a plist: {exc}") from exc
