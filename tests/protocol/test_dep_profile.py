"""The POST /profile body (protocol/dep_profile.py) against Apple's Profile JSON Schema, and Apple's own
profile responses decoded."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pomona.domain import ade_profile as ap
from pomona.domain.ade_profile import AdeProfile, AuthMode
from pomona.protocol import dep_profile as dp
from pomona.protocol.errors import ProfileError
from protocol.apple_schema import require_shared

PROFILE = AdeProfile(
    name="Sales iPhones",
    url="https://mdm.example.com/t/acme/ade/enroll",
    org_magic="6f1d2c3b-acme",
    configuration_web_url="https://mdm.example.com/t/acme/ade/signin",
    await_device_configured=True,
    skip_setup_items=tuple(ap.SKIP_KEYS),
    language="zh",
    region="CN",
    department="IT, Shanghai office",
    support_phone_number="+86 21 5555 0100",
    support_email_address="it-help@example.com",
)


@cache
def schema() -> dict[str, Any]:
    path = require_shared("vectors", "micromdm+apple-device-services", "dep", "schemas", "Profile.json")
    loaded: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return loaded


def errors(body: dict[str, object]) -> list[str]:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    validator = jsonschema_rs.Draft202012Validator(schema(), validate_formats=True)
    return [e.message for e in validator.iter_errors(body)]


def der_cert() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anchor")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


VARIANTS = {
    "modern": PROFILE,
    "legacy": dataclasses.replace(PROFILE, auth=AuthMode.LEGACY, configuration_web_url=None),
    "none-minimal": AdeProfile(
        name="Kiosks", url="https://mdm.example.com/e", org_magic="o", auth=AuthMode.NONE
    ),
    "removable": dataclasses.replace(PROFILE, is_mdm_removable=True, is_supervised=False),
    "anchors": dataclasses.replace(PROFILE, anchor_certs=(der_cert(),)),
}


class TestDefineProfileBody:
    @pytest.mark.parametrize("name", list(VARIANTS))
    def test_lint_clean_profiles_match_apples_schema(self, name: str) -> None:
        """What a lint-clean profile sends is valid against Apple's Profile schema (formats included)."""
        profile = VARIANTS[name]
        assert ap.is_sendable(ap.lint(profile))
        body = dp.encode_profile_definition(ap.to_definition(profile, devices=("C02XK0AAJGH5",)))
        assert errors(body) == []
        assert json.loads(json.dumps(body)) == body

    @pytest.mark.parametrize("name", list(VARIANTS))
    def test_every_key_is_one_of_apples(self, name: str) -> None:
        """Every key sent is a documented property of Apple's Profile (the schema allows extra keys)."""
        body = dp.encode_profile_definition(ap.to_definition(VARIANTS[name]))
        assert set(body) <= set(schema()["properties"]) - {"profile_uuid"}

    def test_required_keys_are_always_sent(self) -> None:
        """is_mdm_removable and org_magic (required by the schema) and profile_name and url are always sent."""
        body = dp.encode_profile_definition(ap.to_definition(VARIANTS["none-minimal"]))
        assert set(schema()["required"]) <= set(body)
        assert body["profile_name"] == "Kiosks" and body["url"] == "https://mdm.example.com/e"

    def test_shape(self) -> None:
        """The modern profile's body, key by key (anchor certificates in base64)."""
        profile = dataclasses.replace(
            PROFILE, skip_setup_items=("AppleID", "Siri"), anchor_certs=(b"\x30\x03abc",)
        )
        body = dp.encode_profile_definition(ap.to_definition(profile, devices=("S1", "S2")))
        assert body == {
            "profile_name": "Sales iPhones",
            "url": "https://mdm.example.com/t/acme/ade/enroll",
            "org_magic": "6f1d2c3b-acme",
            "is_mdm_removable": False,
            "is_supervised": True,
            "is_mandatory": True,
            "await_device_configured": True,
            "skip_setup_items": ["AppleID", "Siri"],
            "configuration_web_url": "https://mdm.example.com/t/acme/ade/signin",
            "language": "zh",
            "region": "CN",
            "department": "IT, Shanghai office",
            "support_phone_number": "+86 21 5555 0100",
            "support_email_address": "it-help@example.com",
            "anchor_certs": ["MANhYmM="],
            "devices": ["S1", "S2"],
        }

    @pytest.mark.parametrize(
        ("change", "bad"),
        [
            ({"region": "CHN"}, "region"),
            ({"language": "chinese"}, "language"),
            ({"support_email_address": "it help"}, "email"),
        ],
    )
    def test_the_schema_refuses_what_lint_refuses(self, change: dict[str, str], bad: str) -> None:
        """The linter's format rules catch what Apple's schema would refuse (so the test can fail)."""
        profile = dataclasses.replace(PROFILE, **change)  # type: ignore[arg-type]
        assert not ap.is_sendable(ap.lint(profile))
        body = dp.encode_profile_definition(ap.to_definition(profile))
        assert errors(body), bad


class TestDecodeProfile:
    def test_apples_fetch_profile_response(self) -> None:
        """micromdm's capture of GET /profile decodes, with its profile_uuid and flags (its placeholder
        texts, such as "(Optional) support@example.com", are kept as they are)."""
        path = require_shared(
            "vectors", "micromdm+micromdm", "dep", "testdata", "fetch_profile_response.json"
        )
        d = dp.decode_profile(path.read_bytes())
        assert (d.profile_uuid, d.profile_name, d.url) == (
            "C1F123098EB5074580041E69883004C3",
            "default",
            "https://mdm.acme.co/mdm/enroll",
        )
        assert (d.is_supervised, d.is_mdm_removable, d.await_device_configured) == (False, True, True)
        assert d.skip_setup_items == ("AppleID", "Android")

    def test_nanodeps_example_definition(self) -> None:
        """nanodep's example definition decodes (its placeholder texts are not checked here)."""
        path = require_shared("vectors", "micromdm+nanodep", "docs", "dep-profile.example.json")
        d = dp.decode_profile(path.read_bytes())
        assert d.devices == ("SERIAL1", "SERIAL2") and d.anchor_certs == ()

    def test_round_trip(self) -> None:
        """Encoding then decoding gives the same definition back."""
        definition = ap.to_definition(VARIANTS["anchors"], devices=("S1",))
        assert dp.decode_profile(json.dumps(dp.encode_profile_definition(definition))) == definition

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[]",
            b'{"url": "https://a"}',
            b'{"profile_name": "p", "url": 5}',
            b'{"profile_name": "p", "url": "u", "is_supervised": "yes"}',
            b'{"profile_name": "p", "url": "u", "skip_setup_items": "AppleID"}',
            b'{"profile_name": "p", "url": "u", "anchor_certs": ["***"]}',
        ],
    )
    def test_refuses_what_is_not_a_profile(self, body: bytes) -> None:
        """Bodies that are not a profile raise ProfileError."""
        with pytest.raises(ProfileError):
            dp.decode_profile(body)
