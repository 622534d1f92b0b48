"""A small checker of plist values against Apple's device-management YAML schemas (test helper).

Apple's schema set (``apple/device-management``, see ``docs/schema.md`` there) describes each profile
payload, MDM command and check-in message as a list of keys with a ``type``, a ``presence``, and optional
``rangelist``, ``format``, ``repetition`` and ``subkeys``. :func:`check` walks a value against such a list
and returns the :class:`Problem` s it finds: a required key missing, an unknown key, a wrong type, a value
outside ``rangelist``, a string not matching ``format``, a wrong array length, or (when a platform is
given) a key the platform does not support.

Walking is driven by the value, which is finite, so the schema files whose YAML anchors form cycles
(``com.apple.applicationaccess.new.yaml``, ``com.apple.homescreenlayout.yaml``) are safe to check against;
:func:`iter_keys`, which walks the schema itself, tracks the nodes it has visited.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SCHEMA_ROOT = SHARED / "apple-device-management"


def require_shared(*parts: str) -> Path:
    """The path of a file under ../shared; fail loudly in CI (CI=true) when absent, else skip."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f"reference material {path} is absent (the repo's sibling 'shared' folder)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


MISSING = "missing"
UNKNOWN = "unknown"
TYPE = "type"
RANGE = "range"
FORMAT = "format"
REPETITION = "repetition"
PLATFORM = "platform"

_SCALAR_TYPES: Mapping[str, tuple[type, ...]] = {
    "<string>": (str,),
    "<integer>": (int,),
    "<real>": (float, int),
    "<boolean>": (bool,),
    "<date>": (dt.datetime,),
    "<data>": (bytes,),
    "<array>": (list,),
    "<dictionary>": (dict,),
}


@dataclass(frozen=True)
class Problem:
    """One finding: where (a dotted path), what kind (one of the constants above), and a detail."""

    path: str
    kind: str
    detail: str = ""


def load_yaml(path: Path) -> dict[str, object]:
    """Load one schema file (aliases become shared, possibly cyclic, Python objects)."""
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict), path
    return data


@cache
def _index(kind: str, field: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted((SCHEMA_ROOT / "mdm" / kind).glob("*.yaml")):
        payload = load_yaml(path).get("payload")
        if isinstance(payload, dict) and isinstance(payload.get(field), str):
            out[str(payload[field])] = path
    return out


def profile_schema(payload_type: str) -> dict[str, object]:
    """The schema of a profile payload type (``com.apple.mdm``, ``TopLevel``, ``CommonPayloadKeys``...)."""
    return load_yaml(_index("profiles", "payloadtype")[payload_type])


def command_schema(request_type: str) -> dict[str, object]:
    """The schema of an MDM command, by ``RequestType``."""
    return load_yaml(_index("commands", "requesttype")[request_type])


def checkin_schema(message_type: str) -> dict[str, object]:
    """The schema of a check-in message, by ``MessageType``."""
    return load_yaml(_index("checkin", "requesttype")[message_type])


def command_request_types() -> frozenset[str]:
    """Every ``RequestType`` Apple's schema set describes."""
    return frozenset(_index("commands", "requesttype"))


def _keys(spec: object) -> list[dict[str, object]]:
    return [k for k in spec if isinstance(k, dict)] if isinstance(spec, list) else []


def iter_keys(keys: object) -> Iterator[dict[str, object]]:
    """Every key definition under ``keys``, depth first, each node once (the YAML may be cyclic)."""
    seen: set[int] = set()
    stack = list(reversed(_keys(keys)))
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(reversed(_keys(node.get("subkeys"))))


def available_on(key: Mapping[str, object], platform: str | None) -> bool:
    """Whether a key exists on ``platform`` (``introduced: n/a`` means it does not)."""
    if platform is None:
        return True
    supported = key.get("supportedOS")
    if not isinstance(supported, dict):
        return True
    info = supported.get(platform)
    return not (isinstance(info, dict) and info.get("introduced") == "n/a")


def _type_ok(value: object, type_name: object) -> bool:
    if type_name == "<any>" or not isinstance(type_name, str):
        return True
    allowed = _SCALAR_TYPES.get(type_name)
    if allowed is None:
        return True
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, allowed)


def _check_value(value: object, spec: Mapping[str, object], path: str, platform: str | None) -> list[Problem]:
    problems: list[Problem] = []
    type_name = spec.get("type")
    if not _type_ok(value, type_name):
        return [Problem(path, TYPE, f"expected {type_name}, got {type(value).__name__}")]
    rangelist = spec.get("rangelist")
    if (
        isinstance(rangelist, list)
        and type_name not in ("<array>", "<dictionary>")
        and value not in rangelist
    ):
        problems.append(Problem(path, RANGE, f"{value!r} not in {rangelist}"))
    pattern = spec.get("format")
    if isinstance(pattern, str) and isinstance(value, str) and not re.search(pattern, value):
        problems.append(Problem(path, FORMAT, f"{value!r} does not match {pattern}"))
    subkeys = _keys(spec.get("subkeys"))
    if type_name == "<dictionary>" and isinstance(value, dict) and subkeys:
        problems.extend(check(value, subkeys, platform=platform, path=path))
    elif type_name == "<array>" and isinstance(value, list) and subkeys:
        problems.extend(_check_array(value, subkeys, path, platform))
    elif isinstance(type_name, str) and type_name not in ("<array>", "<dictionary>") and subkeys:
        # A scalar with subkeys lists its allowed values by key name (e.g. DeviceInformation Queries).
        names = {k.get("key") for k in subkeys if available_on(k, platform)}
        if value not in names:
            problems.append(Problem(path, RANGE, f"{value!r} is not one of the named values"))
    return problems


def _check_array(
    value: list[object], items: list[dict[str, object]], path: str, platform: str | None
) -> list[Problem]:
    problems: list[Problem] = []
    if len(items) == 1:
        item = items[0]
        repetition = item.get("repetition")
        if isinstance(repetition, dict):
            low, high = repetition.get("min"), repetition.get("max")
            if (isinstance(low, int) and len(value) < low) or (isinstance(high, int) and len(value) > high):
                problems.append(Problem(path, REPETITION, f"{len(value)} items, expected {low}..{high}"))
        for i, element in enumerate(value):
            problems.extend(_check_value(element, item, f"{path}[{i}]", platform))
        return problems
    # Several dictionary variants, told apart by their ``Item`` key (Settings command).
    for i, element in enumerate(value):
        variant = _variant_for(element, items)
        if variant is None:
            problems.append(Problem(f"{path}[{i}]", RANGE, "no variant matches this item"))
            continue
        if not available_on(variant, platform):
            problems.append(Problem(f"{path}[{i}]", PLATFORM, f"{variant.get('key')} not on {platform}"))
        problems.extend(_check_value(element, variant, f"{path}[{i}]", platform))
    return problems


def _variant_for(element: object, variants: list[dict[str, object]]) -> dict[str, object] | None:
    if not isinstance(element, dict):
        return None
    for variant in variants:
        for sub in _keys(variant.get("subkeys")):
            allowed = sub.get("rangelist")
            if sub.get("key") == "Item" and isinstance(allowed, list) and element.get("Item") in allowed:
                return variant
    return None


def check(
    value: Mapping[str, object],
    keys: object,
    *,
    platform: str | None = None,
    path: str = "",
) -> list[Problem]:
    """Check a dictionary against a list of key definitions; return every problem found."""
    specs = _keys(keys)
    problems: list[Problem] = []
    by_name = {str(k.get("key")): k for k in specs}
    open_ended = "ANY" in by_name
    for name, spec in by_name.items():
        if name == "ANY":
            continue
        here = f"{path}.{name}" if path else name
        if name not in value:
            if spec.get("presence") == "required" and available_on(spec, platform):
                problems.append(Problem(here, MISSING))
            continue
        if not available_on(spec, platform):
            problems.append(Problem(here, PLATFORM, f"not available on {platform}"))
        problems.extend(_check_value(value[name], spec, here, platform))
    if not open_ended:
        for name in value:
            if name not in by_name:
                problems.append(Problem(f"{path}.{name}" if path else name, UNKNOWN))
    return problems


def check_profile_payload(payload: Mapping[str, object], *, platform: str | None = None) -> list[Problem]:
    """Check one payload of a profile against its type's keys plus Apple's common payload keys."""
    payload_type = payload.get("PayloadType")
    assert isinstance(payload_type, str)
    keys = _keys(profile_schema("CommonPayloadKeys")["payloadkeys"]) + _keys(
        profile_schema(payload_type)["payloadkeys"]
    )
    return check(payload, keys, platform=platform, path=payload_type)


def check_top_level(profile: Mapping[str, object], *, platform: str | None = None) -> list[Problem]:
    """Check the top level of a profile (payload contents are checked one by one elsewhere)."""
    return check(profile, profile_schema("TopLevel")["payloadkeys"], platform=platform, path="TopLevel")
