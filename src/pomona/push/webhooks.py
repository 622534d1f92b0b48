"""The webhook poster (ports.WebhookPoster) over httpx, with its target check.

A tenant administrator chooses the webhook URL, and the server POSTs to it: without a check that is a
blind server-side request to anything the server reaches (loopback services, the cloud metadata address
169.254.169.254, the private network). So a target must be a public address unless the operator allows
private ones (``POMONA_WEBHOOK_ALLOW_PRIVATE``). The URL is checked when it is set and again at each
delivery: the name is resolved, EVERY address it resolves to must be public, and the connection goes to
the address that was checked (the URL is rewritten to it; the Host header and TLS server name stay the
name's), so a name that resolves to a public address once and to a private one the next time (DNS
rebinding) cannot slip through between the check and the connection.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import httpx

from pomona.domain.errors import WebhookTargetError

Resolve = Callable[[str, int], list[str]]


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"{host} does not resolve: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    """Whether ``address`` is a public unicast address (not loopback, private, link-local, shared,
    multicast, reserved or unspecified; an IPv4-mapped IPv6 address is judged by its IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class HttpWebhookPoster:
    def __init__(self, *, allow_private: bool = False, resolve: Resolve = system_resolve) -> None:
        self.allow_private = allow_private
        self._resolve = resolve

    def check(self, url: str) -> None:
        """Refuse (WebhookTargetError) a URL whose host is, or resolves to, a non-public address. A name
        that does not resolve now is accepted here (it is checked again at each delivery)."""
        try:
            self._target(url)
        except OSError:
            pass

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        address, pinned = self._target(url)
        parts = urlsplit(url)
        host = parts.hostname or ""
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        netloc = parts.netloc.rsplit("@", 1)[-1]
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False) as client:
                return client.post(
                    pinned,
                    content=body,
                    headers={**headers, "Host": netloc},
                    extensions=extensions,
                ).status_code
        except httpx.HTTPError as exc:
            raise OSError(f"{type(exc).__name__} ({address}): {exc}") from exc

    def _target(self, url: str) -> tuple[str, str]:
        """The checked address the URL's host resolves to, and the URL rewritten to it."""
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise WebhookTargetError("the webhook URL must be http(s)://host/...", url=url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = [host] if _is_ip(host) else self._resolve(host, port)
        if not addresses:
            raise OSError(f"{host} resolves to no address")
        if not self.allow_private:
            bad = [a for a in addresses if not is_public(a)]
            if bad:
                raise WebhookTargetError(
                    f"the webhook host {host} is or resolves to a non-public address ({', '.join(bad)}); "
                    "set POMONA_WEBHOOK_ALLOW_PRIVATE=true to allow private targets",
                    host=host,
                    addresses=bad,
                )
        address = addresses[0]
        ip_host = f"[{address}]" if ":" in address else address
        pinned = urlunsplit((parts.scheme, f"{ip_host}:{port}", parts.path or "/", parts.query, ""))
        return address, pinned


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


__all__ = ["HttpWebhookPoster", "is_public", "system_resolve"]
