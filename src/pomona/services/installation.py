"""Facts of the installation, kept in the database so every process reads the same value: the public URL.

The public URL is where devices reach the server; enrollment profiles, check-in URLs, the portal, health
and diagnose (the CNAME targets) all derive from it. `pomona serve` records the URL it serves: an address
given to it (``--public-url`` or ``POMONA_PUBLIC_URL``) is recorded as given; otherwise the address it
listens on is recorded, unless an admin set one. ``pomona server set-public-url`` sets it. Any other
process (the CLI, a helper script) reads the recorded value, whatever its own environment says.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from pomona.domain.errors import InvalidInputError
from pomona.i18n import msg
from pomona.ports import SettingsStore

PUBLIC_URL_KEY = "public_url"


class UrlSource(StrEnum):
    SET = "set"  # given by an admin (set-public-url, or serve --public-url / POMONA_PUBLIC_URL)
    SERVE = "serve"  # the address `pomona serve` listened on, nobody having set one


@dataclass(frozen=True)
class PublicUrl:
    url: str
    source: UrlSource


def validate_public_url(text: str) -> str:
    """An absolute http(s) URL with a host and no query, without its trailing slash."""
    raw = text.strip()
    try:
        parts = urlsplit(raw)
        port = parts.port  # raises on a bad port
    except ValueError:
        raise InvalidInputError(msg("error.url.invalid", url=raw)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(msg("error.url.public", url=raw))
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidInputError(msg("error.url.public_parts", url=raw))
    del port
    return raw.rstrip("/")


def is_plain_http_remote(url: str) -> bool:
    """An http:// URL whose host is not this machine's loopback: devices will not enroll over it, and
    whoever is on the path reads the traffic. (http://localhost is the demo's and the tests'.)"""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def recorded_public_url(store: SettingsStore) -> PublicUrl | None:
    raw = store.settings_get(PUBLIC_URL_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return PublicUrl(str(data["url"]), UrlSource(data["source"]))
    except (ValueError, KeyError, TypeError):
        return None


def record_public_url(store: SettingsStore, url: str, source: UrlSource) -> PublicUrl:
    value = PublicUrl(validate_public_url(url), source)
    store.settings_put(PUBLIC_URL_KEY, json.dumps({"url": value.url, "source": value.source.value}).encode())
    return value


def served_public_url(store: SettingsStore, *, given: str | None, listening: str) -> PublicUrl:
    """What `pomona serve` serves, recorded: the URL it was given; else an admin's recorded one; else
    the address it listens on."""
    if given:
        return record_public_url(store, given, UrlSource.SET)
    current = recorded_public_url(store)
    if current is not None and current.source is UrlSource.SET:
        return current
    if current is not None and current.url == listening.rstrip("/"):
        return current
    return record_public_url(store, listening, UrlSource.SERVE)
