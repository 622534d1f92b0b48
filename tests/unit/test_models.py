"""Domain records: what they carry, and what they must not."""

from __future__ import annotations

import dataclasses

from pomona.domain.models import Tenant


class TestTenant:
    def test_no_ca_private_key(self) -> None:
        """A Tenant carries its CA certificate but no field for the CA's private key (every reader caches
        tenants; only the signing code reads the key, through TenantStore.ca_keypair)."""
        names = {f.name for f in dataclasses.fields(Tenant)}
        assert "ca_cert_pem" in names
        assert not [n for n in names if n.startswith("ca_") and "key" in n]
