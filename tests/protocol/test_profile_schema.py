"""The enrollment profile against Apple's payload schemas, and the schema checker against real profiles."""

from __future__ import annotations

import copy
import plistlib

import pytest
from apple_schema import (
    FORMAT,
    MISSING,
    PLATFORM,
    RANGE,
    REPETITION,
    SCHEMA_ROOT,
    TYPE,
    UNKNOWN,
    check_profile_payload,
    check_top_level,
    iter_keys,
    load_yaml,
    require_shared,
)

from pomona.protocol.errors import ProfileError, ProtocolError
from pomona.protocol.profile import (
    EnrollmentProfile,
    build_enrollment_profile,
    decode_profile,
    encode_profile,
    profile_identifier,
)

ARGS: dict[str, object] = {
    "tenant_id": "acme",
    "organization": "Acme Corp",
    "display_name": "Acme device management",
    "scep_url": "https://mdm.acme.test/scep",
    "scep_challenge": "s3cret",
    "scep_subject": [[["O", "Acme Corp"]], [["CN", "Pomona device identity"]]],
    "scep_name": "pomona",
    "server_url": "https://mdm.acme.test/mdm/connect",
    "check_in_url": "https://mdm.acme.test/mdm/checkin",
    "topic": "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9",
}


def build(**changes: object) -> dict[str, object]:
    return build_enrollment_profile(**{**ARGS, **changes})  # type: ignore[arg-type]


def payload(profile: dict[str, object], payload_type: str) -> dict[str, object]:
    content = profile["PayloadContent"]
    assert isinstance(content, list)
    found = [p for p in content if p["PayloadType"] == payload_type]
    assert len(found) == 1
    return found[0]


def kinds(problems: list[object]) -> set[tuple[str, str]]:
    return {(p.path, p.kind) for p in problems}  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _shared() -> None:
    require_shared("apple-device-management", "mdm", "profiles")


class TestOurProfileAgainstApple:
    def test_top_level_is_valid(self) -> None:
        """The profile's top level has exactly Apple's TopLevel keys and types."""
        assert check_top_level(build(), platform="iOS") == []

    @pytest.mark.parametrize("payload_type", ["com.apple.security.scep", "com.apple.mdm"])
    def test_payload_is_valid_on_ios(self, payload_type: str) -> None:
        """The SCEP and MDM payloads pass Apple's schema for iOS: keys, types, values, no unknown keys."""
        assert check_profile_payload(payload(build(), payload_type), platform="iOS") == []

    def test_mdm_payload_values(self) -> None:
        """The MDM payload points at the SCEP identity and carries the documented settings."""
        p = build()
        mdm, scep = payload(p, "com.apple.mdm"), payload(p, "com.apple.security.scep")
        assert mdm["IdentityCertificateUUID"] == scep["PayloadUUID"]
        assert (mdm["AccessRights"], mdm["SignMessage"], mdm["CheckOutWhenRemoved"]) == (8191, True, True)
        assert mdm["ServerCapabilities"] == [
            "com.apple.mdm.per-user-connections",
            "com.apple.mdm.bootstraptoken",
        ]
        assert (mdm["ServerURL"], mdm["CheckInURL"], mdm["Topic"]) == (
            ARGS["server_url"],
            ARGS["check_in_url"],
            ARGS["topic"],
        )

    def test_scep_payload_values(self) -> None:
        """The SCEP payload asks for a 2048-bit RSA key for signing and encryption."""
        content = payload(build(), "com.apple.security.scep")["PayloadContent"]
        assert isinstance(content, dict)
        assert (content["Keysize"], content["Key Type"], content["Key Usage"]) == (2048, "RSA", 5)
        assert (content["URL"], content["Challenge"], content["Name"]) == (
            "https://mdm.acme.test/scep",
            "s3cret",
            "pomona",
        )
        assert content["Subject"] == ARGS["scep_subject"]
        assert (content["Retries"], content["RetryDelay"]) == (3, 10)


class TestStableIdentity:
    def test_same_tenant_same_identifiers(self) -> None:
        """Serving the profile again yields the same identifiers and UUIDs, so it replaces the old one."""
        a, b = build(), build(scep_challenge="another")
        assert (
            a["PayloadIdentifier"]
            == b["PayloadIdentifier"]
            == profile_identifier("acme")
            == "com.pomona.enroll.acme"
        )
        assert a["PayloadUUID"] == b["PayloadUUID"]
        for t in ("com.apple.mdm", "com.apple.security.scep"):
            assert payload(a, t)["PayloadUUID"] == payload(b, t)["PayloadUUID"]
            assert payload(a, t)["PayloadIdentifier"] == payload(b, t)["PayloadIdentifier"]

    def test_other_tenant_other_identifiers(self) -> None:
        """Two tenants get different identifiers and UUIDs."""
        a, b = build(), build(tenant_id="globex")
        assert a["PayloadIdentifier"] != b["PayloadIdentifier"] and a["PayloadUUID"] != b["PayloadUUID"]

    def test_given_identity_uuid_is_used(self) -> None:
        """An explicit identity UUID becomes the SCEP payload UUID the MDM payload references."""
        p = build(identity_uuid="CB90E976-AD44-4B69-8108-8095E6260978")
        assert (
            payload(p, "com.apple.mdm")["IdentityCertificateUUID"] == "CB90E976-AD44-4B69-8108-8095E6260978"
        )
        assert payload(p, "com.apple.security.scep")["PayloadUUID"] == "CB90E976-AD44-4B69-8108-8095E6260978"


class TestBuildValidation:
    @pytest.mark.parametrize(
        "changes",
        [
            {"tenant_id": ""},
            {"tenant_id": "bad tenant/id"},
            {"server_url": "http://mdm.acme.test/mdm"},
            {"check_in_url": "ftp://x"},
            {"scep_url": "https://"},
            {"topic": "com.example.push"},
            {"topic": "com.apple.mgmt."},
            {"access_rights": 0},
            {"access_rights": 8192},
            {"access_rights": 2},
            {"access_rights": 1 | 128},
            {"access_rights": True},
            {"server_capabilities": ["com.example.unknown"]},
            {"scep_subject": []},
            {"scep_subject": [["O", "Acme"]]},
            {"scep_subject": [[["O"]]]},
            {"scep_subject": [[["O", 5]]]},
            {"identity_uuid": "not-a-uuid"},
            {"organization": " "},
            {"scep_challenge": ""},
        ],
        ids=repr,
    )
    def test_invalid_values_raise_profile_error(self, changes: dict[str, object]) -> None:
        """Values Apple's schema refuses raise ProfileError before any profile is served."""
        with pytest.raises(ProfileError):
            build(**changes)

    def test_profile_error_is_a_protocol_error(self) -> None:
        """ProfileError belongs to the protocol error tree."""
        assert issubclass(ProfileError, ProtocolError)


class TestDecodeProfile:
    def test_round_trip(self) -> None:
        """decode_profile reads back what build and encode produced."""
        body = encode_profile(build())
        view = decode_profile(body)
        assert isinstance(view, EnrollmentProfile)
        assert view.identifier == "com.pomona.enroll.acme" and view.raw == body
        assert (view.scep_url, view.scep_challenge, view.scep_keysize, view.scep_key_usage) == (
            "https://mdm.acme.test/scep",
            "s3cret",
            2048,
            5,
        )
        assert view.scep_subject == (((("O", "Acme Corp"),), (("CN", "Pomona device identity"),)))
        assert (view.server_url, view.effective_check_in_url, view.topic) == (
            ARGS["server_url"],
            ARGS["check_in_url"],
            ARGS["topic"],
        )
        assert view.sign_message and view.check_out_when_removed and view.access_rights == 8191

    def test_real_nanomdm_profile(self) -> None:
        """Another server's real enrollment profile decodes, with Apple's defaults for absent keys."""
        body = require_shared("vectors", "micromdm+nanomdm", "docs", "enroll.mobileconfig").read_bytes()
        view = decode_profile(body)
        assert view.identity_uuid == "CB90E976-AD44-4B69-8108-8095E6260978"
        assert (view.scep_challenge, view.scep_keysize, view.scep_subject, view.check_in_url) == (
            "SCEP-CHALLENGE-HERE",
            2048,
            (),
            None,
        )
        assert view.effective_check_in_url == "https://mdm.example.org/mdm"
        assert "com.apple.mdm.token" in view.server_capabilities

    def test_profile_without_mdm_payload(self) -> None:
        """A profile with no MDM payload (the SCEP test profile) is not an enrollment profile."""
        body = require_shared(
            "vectors", "micromdm+scep", "testdata", "testca", "sceptest.mobileconfig"
        ).read_bytes()
        with pytest.raises(ProfileError):
            decode_profile(body)

    def test_identity_must_name_a_scep_payload(self) -> None:
        """An MDM payload whose IdentityCertificateUUID names no SCEP payload is refused."""
        p = build()
        payload(p, "com.apple.mdm")["IdentityCertificateUUID"] = "00000000-0000-0000-0000-000000000000"
        with pytest.raises(ProfileError):
            decode_profile(encode_profile(p))

    @pytest.mark.parametrize(
        "mutate",
        [
            lambda p: p.update(PayloadType="Other"),
            lambda p: p.update(PayloadContent="x"),
            lambda p: payload(p, "com.apple.mdm").pop("Topic"),
            lambda p: payload(p, "com.apple.mdm").update(SignMessage="yes"),
            lambda p: payload(p, "com.apple.mdm").update(ServerCapabilities=[1]),
            lambda p: payload(p, "com.apple.security.scep")["PayloadContent"].update(Keysize="big"),
            lambda p: payload(p, "com.apple.security.scep")["PayloadContent"].update(Subject="CN=x"),
        ],
    )
    def test_malformed_profiles(self, mutate: object) -> None:
        """Profiles with wrongly typed or missing keys raise ProfileError."""
        p = build()
        assert callable(mutate)
        mutate(p)
        with pytest.raises(ProfileError):
            decode_profile(encode_profile(p))

    def test_non_plist_body(self) -> None:
        """A body that is not a plist raises ProfileError."""
        with pytest.raises(ProfileError):
            decode_profile(b"MIME-Version: 1.0 (signed)")

    def test_unencodable_profile(self) -> None:
        """encode_profile raises ProfileError for a value plists cannot hold."""
        with pytest.raises(ProfileError):
            encode_profile({"PayloadType": None})


class TestCheckerSanity:
    def test_real_nanomdm_profile_passes(self) -> None:
        """Another server's real enrollment profile passes the checker (it is well-formed)."""
        d = plistlib.loads(
            require_shared("vectors", "micromdm+nanomdm", "docs", "enroll.mobileconfig").read_bytes()
        )
        assert check_top_level(d) == []
        for p in d["PayloadContent"]:
            assert check_profile_payload(p) == []

    def test_real_scep_test_profile_deviations_are_found(self) -> None:
        """The checker finds the two real deviations in the SCEP test profile: 'KeyType' and a <real> version."""
        d = plistlib.loads(
            require_shared(
                "vectors", "micromdm+scep", "testdata", "testca", "sceptest.mobileconfig"
            ).read_bytes()
        )
        assert check_top_level(d) == []
        found: set[tuple[str, str]] = set()
        for p in d["PayloadContent"]:
            found |= kinds(check_profile_payload(p))
        assert found == {
            ("com.apple.security.scep.PayloadContent.KeyType", UNKNOWN),
            ("com.apple.security.scep.PayloadVersion", TYPE),
        }

    @pytest.mark.parametrize(
        ("payload_type", "mutate", "expected"),
        [
            ("com.apple.mdm", lambda p: p.pop("Topic"), ("com.apple.mdm.Topic", MISSING)),
            ("com.apple.mdm", lambda p: p.update(ServerURL="http://x"), ("com.apple.mdm.ServerURL", FORMAT)),
            ("com.apple.mdm", lambda p: p.update(AccessRights="all"), ("com.apple.mdm.AccessRights", TYPE)),
            ("com.apple.mdm", lambda p: p.update(SignMessage=1), ("com.apple.mdm.SignMessage", TYPE)),
            ("com.apple.mdm", lambda p: p.update(Bogus=1), ("com.apple.mdm.Bogus", UNKNOWN)),
            ("com.apple.mdm", lambda p: p.update(PayloadVersion=2), ("com.apple.mdm.PayloadVersion", RANGE)),
            (
                "com.apple.mdm",
                lambda p: p.update(ServerCapabilities=["x"]),
                ("com.apple.mdm.ServerCapabilities[0]", RANGE),
            ),
            (
                "com.apple.mdm",
                lambda p: p.update(PromptUserToAllowBootstrapTokenForAuthentication=True),
                ("com.apple.mdm.PromptUserToAllowBootstrapTokenForAuthentication", PLATFORM),
            ),
            (
                "com.apple.security.scep",
                lambda p: p["PayloadContent"].update(Keysize=1000),
                ("com.apple.security.scep.PayloadContent.Keysize", RANGE),
            ),
            (
                "com.apple.security.scep",
                lambda p: p["PayloadContent"].pop("URL"),
                ("com.apple.security.scep.PayloadContent.URL", MISSING),
            ),
            (
                "com.apple.security.scep",
                lambda p: p["PayloadContent"].update(Subject=[[["CN"]]]),
                ("com.apple.security.scep.PayloadContent.Subject[0][0]", REPETITION),
            ),
        ],
    )
    def test_checker_flags_each_kind_of_problem(
        self, payload_type: str, mutate: object, expected: tuple[str, str]
    ) -> None:
        """A single mutation of our profile yields the matching problem kind at the right path."""
        p = copy.deepcopy(payload(build(), payload_type))
        assert callable(mutate)
        mutate(p)
        assert expected in kinds(check_profile_payload(p, platform="iOS"))

    @pytest.mark.parametrize(
        "name", ["com.apple.applicationaccess.new.yaml", "com.apple.homescreenlayout.yaml"]
    )
    def test_cyclic_schemas_are_walked_once(self, name: str) -> None:
        """Walking the schemas whose YAML anchors form cycles terminates and visits each node once."""
        keys = list(iter_keys(load_yaml(SCHEMA_ROOT / "mdm" / "profiles" / name)["payloadkeys"]))
        assert keys and len({id(k) for k in keys}) == len(keys)
