"""MachineInfo (protocol/machineinfo.py): the ADE device's signed facts, verified against a pinned device CA
key with dates ignored, over Apple's real device certificates and the virtual device's signatures."""

from __future__ import annotations

import base64
import datetime as dt
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509

from pomona.domain.errors import from_protocol
from pomona.domain.reasons import ReasonCode as R
from pomona.protocol import machineinfo as mi
from pomona.protocol import plist
from pomona.protocol.errors import (
    MachineInfoBadSignatureError,
    MachineInfoChainError,
    MachineInfoDigestUnsupportedError,
    MachineInfoError,
    MachineInfoIssuerNotCaError,
    MachineInfoMalformedError,
    MachineInfoMultipleSignersError,
    MachineInfoSignerCertMissingError,
    MachineInfoSignerUntrustedError,
    MachineInfoTamperedError,
    MachineInfoUnsignedError,
)
from pomona.testing.device_ca import Issuer, TestDeviceCa, sign_machine_info
from pomona.testing.virtual_device import VirtualDevice

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "micromdm+micromdm" / "pkg" / "crypto"
APPLE_CERTS = ("appleca_signed.pem", "appleca_signed_newer.pem")
CONTENT = mi.encode_machine_info(
    udid="00008120-000A1B2C3D4E5F60",
    serial="F5JM992LF193",
    product="iPhone15,2",
    version="21E219",
    os_version="17.4",
    imei="356789012345678",
    language="zh-Hans",
    mdm_can_request_software_update=True,
)


def apple_cert(name: str) -> x509.Certificate:
    path = VECTORS / "testdata" / name
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/vectors)")
    return x509.load_pem_x509_certificate(path.read_bytes())


@cache
def ca() -> TestDeviceCa:
    return TestDeviceCa.generate()


@cache
def identity() -> tuple[object, x509.Certificate]:
    return ca().issue_device_identity("00008120-000A1B2C3D4E5F60")


def signed(content: bytes = CONTENT, **kwargs: object) -> bytes:
    key, cert = identity()
    kwargs.setdefault("certificates", [cert, ca().device_ca.cert])
    return sign_machine_info(content, [(cert, key)], **kwargs)  # type: ignore[list-item,arg-type]


def refused(body: bytes, keys: object = None) -> MachineInfoError:
    with pytest.raises(MachineInfoError) as info:
        mi.verify_machine_info(body, keys or ca().trusted_keys)  # type: ignore[arg-type]
    return info.value


class TestAppleDeviceCa:
    def test_pin_matches_its_fingerprint(self) -> None:
        """The pinned key is Apple iPhone Device CA's, as its SHA-256 SubjectPublicKeyInfo fingerprint says."""
        (key,) = mi.apple_device_ca_keys()
        assert mi.spki_sha256(key) == mi.APPLE_IPHONE_DEVICE_CA_SPKI_SHA256

    @pytest.mark.parametrize("name", APPLE_CERTS)
    def test_real_device_certificates_chain_to_the_pinned_key(self, name: str) -> None:
        """Apple-issued device identities (SHA-1 of 2018, SHA-256 of 2024) chain to the pinned key alone."""
        cert = apple_cert(name)
        assert mi.verify_device_identity(cert, [], mi.apple_device_ca_keys()) == (cert,)

    def test_dates_are_ignored(self) -> None:
        """The 2018 identity expired in 2019 and the CA in 2014: the chain still holds, dates unread."""
        cert = apple_cert("appleca_signed.pem")
        assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
        assert mi.verify_device_identity(cert, [], mi.apple_device_ca_keys()) == (cert,)

    @pytest.mark.parametrize("name", APPLE_CERTS)
    def test_real_device_certificates_are_not_trusted_under_a_test_ca(self, name: str) -> None:
        """Apple's identities do not chain to a test CA's key: the trust is the key given, nothing else."""
        with pytest.raises(MachineInfoSignerUntrustedError):
            mi.verify_device_identity(apple_cert(name), [], ca().trusted_keys)

    def test_a_test_device_is_not_an_apple_device(self) -> None:
        """A virtual device's MachineInfo is refused under Apple's pin (its CA is not Apple's)."""
        err = refused(signed(), mi.apple_device_ca_keys())
        assert isinstance(err, MachineInfoChainError)
        assert from_protocol(err).reason is R.MACHINEINFO_SIGNER_UNTRUSTED


class TestAccepts:
    def test_a_virtual_device_signs_as_devices_do(self) -> None:
        """The virtual device's MachineInfo verifies under its test CA and carries the device's facts."""
        with VirtualDevice("http://pomona.invalid/enroll", os_version="17.4") as device:
            result = mi.verify_machine_info(device.machine_info(ca(), language="zh-Hans"), ca().trusted_keys)
        info = result.info
        assert (info.udid, info.serial, info.product) == (device.udid, device.serial, "iPhone15,2")
        assert (info.version, info.os_version, info.imei) == (device.build_version, "17.4", device.imei)
        assert (info.language, info.mdm_can_request_software_update) == ("zh-Hans", True)
        assert result.signer.subject.rfc4514_string() == f"CN={device.udid}"
        assert result.signed_attributes and result.digest_algorithm == "sha256"

    def test_an_older_device_sends_no_os_version(self) -> None:
        """Before iOS 17 a device sends no OS_VERSION and cannot be asked to update."""
        with VirtualDevice("http://pomona.invalid/enroll", os_version="16.7") as device:
            info = mi.verify_machine_info(device.machine_info(ca()), ca().trusted_keys).info
        assert info.os_version is None and info.mdm_can_request_software_update is False

    @pytest.mark.parametrize(("digest", "attributes"), [("sha1", False), ("sha256", False), ("sha1", True)])
    def test_a_virtual_device_signs_other_ways(self, digest: str, attributes: bool) -> None:
        """The virtual device can sign with SHA-1, and without signed attributes, as older devices do."""
        with VirtualDevice("http://pomona.invalid/enroll") as device:
            body = device.machine_info(ca(), digest=digest, signed_attributes=attributes)  # type: ignore[arg-type]
        result = mi.verify_machine_info(body, ca().trusted_keys)
        assert (result.digest_algorithm, result.signed_attributes) == (digest, attributes)

    def test_the_device_keeps_its_identity(self) -> None:
        """A device signs every MachineInfo with the same Apple identity, as real hardware does."""
        with VirtualDevice("http://pomona.invalid/enroll") as device:
            first = mi.verify_machine_info(device.machine_info(ca()), ca().trusted_keys).signer
            second = mi.verify_machine_info(device.machine_info(ca()), ca().trusted_keys).signer
        assert first == second

    def test_an_expired_device_ca_issuing_current_leaves(self) -> None:
        """The device CA expired years ago (as Apple's); its current leaves still verify."""
        assert ca().device_ca.cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
        assert mi.verify_machine_info(signed(), ca().trusted_keys).info.serial == "F5JM992LF193"

    def test_with_signed_attributes(self) -> None:
        """A signature over signed attributes (messageDigest, contentType) verifies."""
        assert mi.verify_machine_info(signed(signed_attributes=True), ca().trusted_keys).signed_attributes

    def test_without_signed_attributes(self) -> None:
        """A signature straight over the content (no signed attributes) verifies."""
        result = mi.verify_machine_info(signed(signed_attributes=False), ca().trusted_keys)
        assert not result.signed_attributes and result.info.udid == "00008120-000A1B2C3D4E5F60"

    @pytest.mark.parametrize("digest", ["sha1", "sha256", "sha384", "sha512"])
    def test_sha1_and_sha2_digests(self, digest: str) -> None:
        """SHA-1 (older devices) and every SHA-2 digest verify."""
        assert mi.verify_machine_info(signed(digest=digest), ca().trusted_keys).digest_algorithm == digest

    def test_an_rsa_chain(self) -> None:
        """An RSA device CA issuing an RSA identity verifies."""
        rsa_ca = TestDeviceCa.generate(key_type="rsa")
        key, cert = rsa_ca.issue_device_identity("RSA-UDID", key_type="rsa")
        body = sign_machine_info(CONTENT, [(cert, key)])
        assert mi.verify_machine_info(body, rsa_ca.trusted_keys).signer == cert

    def test_an_ecdsa_chain(self) -> None:
        """An ECDSA device CA issuing an ECDSA identity verifies, with and without signed attributes."""
        ec_ca = TestDeviceCa.generate(key_type="ec")
        key, cert = ec_ca.issue_device_identity("EC-UDID", key_type="ec")
        for attributes in (True, False):
            body = sign_machine_info(CONTENT, [(cert, key)], signed_attributes=attributes)
            assert mi.verify_machine_info(body, ec_ca.trusted_keys).signer == cert

    def test_mixed_rsa_ca_and_ecdsa_leaf(self) -> None:
        """An RSA device CA may issue an ECDSA identity."""
        key, cert = ca().issue_device_identity("EC-LEAF", key_type="ec")
        assert (
            mi.verify_machine_info(sign_machine_info(CONTENT, [(cert, key)]), ca().trusted_keys).signer
            == cert
        )

    def test_through_a_carried_intermediate(self) -> None:
        """When the trusted key is a root's, the device CA carried in the message completes the path."""
        body = signed()
        root_keys = (ca().root.cert.public_key(),)
        result = mi.verify_machine_info(body, root_keys)  # type: ignore[arg-type]
        assert result.chain == (identity()[1], ca().device_ca.cert)

    def test_the_aspen_deviceinfo_header(self) -> None:
        """The web view's x-apple-aspen-deviceinfo header is the same SignedData in base64."""
        header = base64.b64encode(signed()).decode()
        body = mi.decode_deviceinfo_header(header)
        assert mi.verify_machine_info(body, ca().trusted_keys).info.product == "iPhone15,2"

    def test_unknown_keys_are_kept_not_refused(self) -> None:
        """A key Apple adds later is tolerated and named in unknown_keys."""
        d = plist.loads(CONTENT)
        d["NEW_KEY_FROM_IOS_30"] = "x"
        result = mi.verify_machine_info(signed(plist.dumps(d)), ca().trusted_keys)
        assert result.info.unknown_keys == ("NEW_KEY_FROM_IOS_30",)


class TestRefuses:
    def test_tampered_content(self) -> None:
        """Content changed after signing no longer matches the signed messageDigest."""
        body = signed().replace(b"F5JM992LF193", b"F5JM992LF194")
        err = refused(body)
        assert type(err) is MachineInfoTamperedError
        assert from_protocol(err).reason is R.MACHINEINFO_SIGNATURE_INVALID

    def test_tampered_content_without_signed_attributes(self) -> None:
        """Without signed attributes, changed content shows as a signature that does not verify."""
        body = signed(signed_attributes=False).replace(b"F5JM992LF193", b"F5JM992LF194")
        assert type(refused(body)) is MachineInfoBadSignatureError

    def test_no_signer(self) -> None:
        """A SignedData with no SignerInfo is unsigned."""
        _, cert = identity()
        err = refused(sign_machine_info(CONTENT, [], certificates=[cert]))
        assert type(err) is MachineInfoUnsignedError
        assert from_protocol(err).reason is R.MACHINEINFO_SIGNATURE_INVALID

    def test_more_than_one_signer(self) -> None:
        """Two signers are refused, even when both are valid device identities."""
        first = identity()
        second = ca().issue_device_identity("SECOND")
        body = sign_machine_info(CONTENT, [(first[1], first[0]), (second[1], second[0])])  # type: ignore[list-item]
        assert type(refused(body)) is MachineInfoMultipleSignersError

    def test_an_unsupported_digest(self) -> None:
        """An MD5 digest is refused before any signature is checked."""
        err = refused(signed(digest="md5"))
        assert type(err) is MachineInfoDigestUnsupportedError
        assert from_protocol(err).reason is R.MACHINEINFO_SIGNATURE_INVALID

    def test_a_missing_signer_certificate(self) -> None:
        """A message that does not carry its signer's certificate is refused."""
        err = refused(signed(certificates=[ca().device_ca.cert]))
        assert type(err) is MachineInfoSignerCertMissingError

    def test_a_signer_from_another_ca(self) -> None:
        """An identity from another CA (not trusted, not carried) is refused."""
        other = TestDeviceCa.generate()
        key, cert = other.issue_device_identity("OTHER")
        err = refused(sign_machine_info(CONTENT, [(cert, key)]))
        assert type(err) is MachineInfoSignerUntrustedError
        assert from_protocol(err).reason is R.MACHINEINFO_SIGNER_UNTRUSTED

    def test_a_chain_to_the_root_not_through_the_device_ca(self) -> None:
        """A leaf of a sibling CA under the same root chains to the root, never to the pinned device CA."""
        sibling = ca().root.issue_ca("Sibling CA")
        key, cert = sibling.issue_leaf("SIBLING-LEAF")
        body = sign_machine_info(CONTENT, [(cert, key)], certificates=[cert, sibling.cert, ca().root.cert])
        err = refused(body)
        assert type(err) is MachineInfoChainError
        assert from_protocol(err).reason is R.MACHINEINFO_SIGNER_UNTRUSTED

    def test_a_non_ca_certificate_acting_as_issuer(self) -> None:
        """A genuine device identity (not a CA) that issues another certificate cannot vouch for it."""
        leaf_key, leaf_cert = identity()
        key, cert = Issuer(leaf_key, leaf_cert).issue_leaf("SUB-LEAF")  # type: ignore[arg-type]
        body = sign_machine_info(CONTENT, [(cert, key)], certificates=[cert, leaf_cert])
        err = refused(body)
        assert type(err) is MachineInfoIssuerNotCaError
        assert from_protocol(err).reason is R.MACHINEINFO_SIGNER_UNTRUSTED

    def test_a_signature_by_a_different_key(self) -> None:
        """A signature made with a key other than the signer certificate's does not verify."""
        _, cert = identity()
        stranger, _ = ca().issue_device_identity("STRANGER")
        err = refused(sign_machine_info(CONTENT, [(cert, stranger)]))
        assert type(err) is MachineInfoBadSignatureError
        assert from_protocol(err).reason is R.MACHINEINFO_SIGNATURE_INVALID


class TestMalformed:
    @pytest.mark.parametrize(
        "body",
        [b"", b"not DER at all", b"\x30\x03\x02\x01\x00", b"\x30" + b"\x80" * 10],
        ids=["empty", "text", "short-sequence", "garbage"],
    )
    def test_not_a_signed_data(self, body: bytes) -> None:
        """Bytes that are not a SignedData are malformed."""
        err = refused(body)
        assert type(err) is MachineInfoMalformedError
        assert from_protocol(err).reason is R.MACHINEINFO_MALFORMED

    def test_too_large(self) -> None:
        """A body over the limit is refused before it is parsed."""
        with pytest.raises(MachineInfoMalformedError):
            mi.verify_machine_info(signed(), ca().trusted_keys, max_size=100)

    def test_too_many_certificates(self) -> None:
        """More certificates than a device carries are refused before any is checked."""
        _, cert = identity()
        body = signed(certificates=[cert] + [ca().device_ca.cert] * mi.MAX_CERTIFICATES)
        assert type(refused(body)) is MachineInfoMalformedError

    @pytest.mark.parametrize("missing", ["UDID", "SERIAL", "PRODUCT", "VERSION"])
    def test_a_required_key_missing(self, missing: str) -> None:
        """A signed plist without UDID, SERIAL, PRODUCT or VERSION is malformed."""
        d = plist.loads(CONTENT)
        del d[missing]
        assert type(refused(signed(plist.dumps(d)))) is MachineInfoMalformedError

    @pytest.mark.parametrize(
        ("key", "value"),
        [("UDID", 5), ("LANGUAGE", True), ("MDM_CAN_REQUEST_SOFTWARE_UPDATE", "yes"), ("PAIRING_TOKEN", "x")],
    )
    def test_a_key_of_the_wrong_type(self, key: str, value: object) -> None:
        """A key of the wrong type is malformed, named in the error."""
        d = plist.loads(CONTENT)
        d[key] = value
        with pytest.raises(MachineInfoMalformedError, match=key):
            mi.decode_machine_info(plist.dumps(d))

    def test_content_that_is_not_a_plist(self) -> None:
        """A well-signed body whose content is not a plist is malformed."""
        assert type(refused(signed(b"hello"))) is MachineInfoMalformedError

    def test_a_header_that_is_not_base64(self) -> None:
        """An x-apple-aspen-deviceinfo header that is not base64 is malformed."""
        with pytest.raises(MachineInfoMalformedError):
            mi.decode_deviceinfo_header("***")

    def test_an_empty_trust_is_a_programming_error(self) -> None:
        """Verifying against no key at all is the caller's bug, not a device's refusal."""
        with pytest.raises(ValueError, match="trusted"):
            mi.verify_machine_info(signed(), ())


def update_schema() -> object:
    from protocol.apple_schema import load_yaml, require_shared

    path = require_shared("apple-device-management", "mdm", "errors", "softwareupdate.required.yaml")
    return load_yaml(path)["payloadkeys"]


class TestSoftwareUpdateRequired:
    def test_minimal_body_matches_apples_schema(self) -> None:
        """The body with just the OS version is valid against Apple's error schema."""
        from protocol.apple_schema import check

        body = mi.software_update_required_body(mi.SoftwareUpdateRequired(os_version="17.4"))
        assert body == {"code": "com.apple.softwareupdate.required", "details": {"OSVersion": "17.4"}}
        assert check(body, update_schema(), platform="iOS") == []

    def test_full_body_matches_apples_schema(self) -> None:
        """Build, messages and a beta program: every key is Apple's, of Apple's type."""
        from protocol.apple_schema import check

        answer = mi.SoftwareUpdateRequired(
            os_version="16.1 (a)",
            build_version="20A242a",
            message="Update iOS to continue setup.",
            description="OS_VERSION_TOO_LOW 16.0 < 16.1",
            beta_description="Acme beta",
            beta_token="tok-123",
        )
        body = mi.software_update_required_body(answer)
        assert check(body, update_schema(), platform="iOS") == []
        details = body["details"]
        assert isinstance(details, dict) and details["RequireBetaProgram"] == {
            "Description": "Acme beta",
            "Token": "tok-123",
        }

    def test_the_schema_check_can_fail(self) -> None:
        """A body without details, or with another code, is caught by the same check."""
        from protocol.apple_schema import check

        assert check({"code": "com.apple.softwareupdate.required"}, update_schema())
        assert check({"code": "other", "details": {"OSVersion": "17.4"}}, update_schema())

    @pytest.mark.parametrize("fmt", ["json", "plist"])
    def test_encodings_decode_back(self, fmt: str) -> None:
        """JSON and plist bodies name their content type and read back as the same answer."""
        answer = mi.SoftwareUpdateRequired(os_version="18.1", build_version="22B83", message="更新 iOS")
        body, content_type = mi.encode_software_update_required(answer, fmt=fmt)  # type: ignore[arg-type]
        assert content_type == {"json": "application/json", "plist": "application/xml"}[fmt]
        assert mi.decode_software_update_required(body) == answer

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"os_version": ""},
            {"os_version": "seventeen"},
            {"os_version": "17.4", "build_version": "latest"},
            {"os_version": "17.4", "beta_token": "t"},
        ],
    )
    def test_refuses_what_apple_would_not_read(self, kwargs: dict[str, str]) -> None:
        """A version that is not one, or half a beta program, is the caller's error."""
        with pytest.raises(ValueError):
            mi.SoftwareUpdateRequired(**kwargs)

    @pytest.mark.parametrize(
        "body",
        [
            b'{"code": "com.apple.unrecognized.device"}',
            b'{"code": "com.apple.softwareupdate.required"}',
            b'{"code": "com.apple.softwareupdate.required", "details": {"OSVersion": 17}}',
            b'{"code": "com.apple.softwareupdate.required", "details": {"OSVersion": "x"}}',
            b"not json",
            b"<plist",
        ],
    )
    def test_other_answers_are_not_an_update(self, body: bytes) -> None:
        """Another code, or a broken body, is not read as a required update."""
        assert mi.decode_software_update_required(body) is None


class TestBoundedWork:
    def test_an_oversized_rsa_key_is_refused(self) -> None:
        """A carried certificate with an RSA key over 4096 bits is refused before any signature check."""
        from cryptography.hazmat.primitives.asymmetric import rsa

        big = rsa.generate_private_key(public_exponent=65537, key_size=mi.MAX_RSA_BITS + 8)
        key, cert = ca().issue_device_identity("BIG-KEY", key=big)
        err = refused(sign_machine_info(CONTENT, [(cert, key)]))
        assert type(err) is MachineInfoMalformedError and "bits" in str(err)

    def test_the_signature_checks_are_budgeted(self) -> None:
        """Past MAX_SIGNATURE_CHECKS certificate signatures the path search stops with a chain error."""
        _, cert = identity()
        strangers = tuple(
            TestDeviceCa.generate(key_type="ec").trusted_keys[0] for _ in range(mi.MAX_SIGNATURE_CHECKS)
        )
        with pytest.raises(MachineInfoChainError, match="more than"):
            mi.verify_device_identity(cert, [], (*strangers, *ca().trusted_keys))
        assert mi.verify_device_identity(cert, [], (*strangers[:-1], *ca().trusted_keys)) == (cert,)
