"""The Resolver port on dnspython: CNAME look-ups through a configurable name server."""

from __future__ import annotations

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver


class DnsResolver:
    """`server` is 'ip' or 'ip:port'; None uses the system's resolvers (/etc/resolv.conf)."""

    def __init__(self, server: str | None = None, *, timeout: float = 2.0) -> None:
        self.server = server
        self.timeout = timeout

    def _resolver(self) -> dns.resolver.Resolver:
        if self.server is None:
            r = dns.resolver.Resolver()
        else:
            r = dns.resolver.Resolver(configure=False)
            host, _, port = (
                self.server.rpartition(":") if self.server.count(":") == 1 else (self.server, "", "")
            )
            r.nameservers = [host or self.server]
            if port:
                r.port = int(port)
        r.lifetime = self.timeout
        r.timeout = self.timeout
        return r

    def cname(self, name: str) -> str | None:
        """The CNAME target of `name` (without the trailing dot), or None when there is none.

        Raises LookupError when the name server cannot be asked (timeout, refused)."""
        try:
            answer = self._resolver().resolve(name, dns.rdatatype.CNAME, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise LookupError(f"DNS look-up of {name} failed: {exc}") from exc
        for rr in answer.rrset or ():
            target = str(rr.target)
            return target.rstrip(".").lower()
        return None
