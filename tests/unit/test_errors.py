"""The error tree (domain/errors.py): the class decides status and reason; describe() maps any exception;
each surface (device, admin API, CLI) renders what describe() says."""

from __future__ import annotations

import inspect
import json

import pytest

from pomona.domain import errors as E
from pomona.domain.reasons import ReasonCode as R
from pomona.protocol.errors import (
    CheckinParseError,
    CmsError,
    CsrSignatureError,
    MachineInfoChainError,
    MachineInfoMalformedError,
    MachineInfoTamperedError,
    PlistError,
    PlistTooLargeError,
    ProtocolError,
    ScepMalformedError,
)

# (class, HTTP status, reason): the whole tree.
TREE: list[tuple[type[E.PomonaError], int, R]] = [
    (E.PomonaError, 500, R.INTERNAL_ERROR),
    (E.MalformedRequestError, 400, R.MALFORMED_REQUEST),
    (E.BodyTooLargeError, 413, R.MALFORMED_REQUEST),
    (E.HeadersTooLargeError, 431, R.MALFORMED_REQUEST),
    (E.SignatureInvalidError, 401, R.SIGNATURE_INVALID),
    (E.CertNotTrustedError, 401, R.CERT_NOT_TRUSTED),
    (E.CertDeviceMismatchError, 401, R.CERT_DEVICE_MISMATCH),
    (E.TopicMismatchError, 401, R.TOPIC_MISMATCH),
    (E.IdentityEndedError, 401, R.IDENTITY_ENDED),
    (E.AdeMachineInfoMalformedError, 400, R.MACHINEINFO_MALFORMED),
    (E.AdeSignatureInvalidError, 401, R.MACHINEINFO_SIGNATURE_INVALID),
    (E.AdeSignerUntrustedError, 401, R.MACHINEINFO_SIGNER_UNTRUSTED),
    (E.UnknownEnrollmentError, 401, R.UNKNOWN_ENROLLMENT),
    (E.UnknownTenantError, 401, R.UNKNOWN_ENROLLMENT),
    (E.UnenrollDeviceError, 403, R.UNKNOWN_ENROLLMENT),
    (E.DeviceBlockedError, 403, R.DEVICE_BLOCKED),
    (E.MessageTypeUnsupportedError, 400, R.MESSAGE_TYPE_UNSUPPORTED),
    (E.UserChannelDeclinedError, 410, R.MESSAGE_TYPE_UNSUPPORTED),
    (E.EnrollmentTokenError, 403, R.ENROLLMENT_TOKEN_INVALID),
    (E.EnrollmentTokenExpiredError, 403, R.ENROLLMENT_TOKEN_EXPIRED),
    (E.NotFoundError, 404, R.NOT_FOUND),
    (E.ConflictError, 409, R.ALREADY_EXISTS),
    (E.LicensesExhaustedError, 409, R.LICENSES_EXHAUSTED),
    (E.PushTopicChangedError, 409, R.APNS_TOPIC_CHANGED),
    (E.ForbiddenError, 401, R.API_AUTH_FAILED),
    (E.ApiTokenExpiredError, 401, R.API_TOKEN_EXPIRED),
    (E.ApiTokenRevokedError, 401, R.API_TOKEN_REVOKED),
    (E.InvalidInputError, 422, R.INVALID_INPUT),
    (E.TenantNameInvalidError, 422, R.TENANT_NAME_INVALID),
    (E.PushCertInvalidError, 422, R.APNS_CERT_INVALID),
    (E.PushCertExpiredError, 422, R.APNS_CERT_EXPIRED),
    (E.WebhookTargetError, 422, R.WEBHOOK_TARGET_REFUSED),
    (E.AdeProfileInvalidError, 422, R.DEP_PROFILE_REJECTED),
    (E.ServerKeyError, 500, R.SERVER_KEY_MISMATCH),
    (E.UpstreamError, 502, R.INTERNAL_ERROR),
    (E.StartupError, 500, R.INTERNAL_ERROR),
    (E.CertFileError, 500, R.CERT_FILE_INVALID),
    (E.DatabaseUnavailableError, 500, R.DATABASE_UNAVAILABLE),
    (E.DataDirError, 500, R.DATA_DIR_UNUSABLE),
    (E.PortUnavailableError, 500, R.PORT_UNAVAILABLE),
    (E.BackupError, 500, R.INTERNAL_ERROR),
    (E.BackupNotSqliteError, 500, R.BACKUP_NOT_SQLITE),
    (E.BackupInvalidError, 500, R.BACKUP_INVALID),
    (E.BackupTooNewError, 500, R.BACKUP_TOO_NEW),
    (E.RestoreTargetNotEmptyError, 500, R.RESTORE_TARGET_NOT_EMPTY),
    (E.WebhookDeliveryError, 502, R.WEBHOOK_DELIVERY_FAILED),
    (E.AbmTokenFileError, 422, R.DEP_TOKEN_INVALID),
    (E.AbmTokenFileExpiredError, 422, R.DEP_TOKEN_EXPIRED),
    (E.AbmError, 502, R.INTERNAL_ERROR),
    (E.AbmTokenInvalidError, 502, R.DEP_TOKEN_INVALID),
    (E.AbmTokenExpiredError, 502, R.DEP_TOKEN_EXPIRED),
    (E.AbmTermsNotAcceptedError, 502, R.DEP_TERMS_NOT_ACCEPTED),
    (E.AbmCursorExpiredError, 502, R.DEP_CURSOR_EXPIRED),
    (E.AbmProfileNotFoundError, 502, R.DEP_PROFILE_NOT_FOUND),
    (E.AbmProfileRejectedError, 502, R.DEP_PROFILE_REJECTED),
    (E.AbmThrottledError, 503, R.INTERNAL_ERROR),
]


def tree_classes() -> set[type[E.PomonaError]]:
    return {c for _, c in inspect.getmembers(E, inspect.isclass) if issubclass(c, E.PomonaError)}


class TestTree:
    @pytest.mark.parametrize(("cls", "status", "reason"), TREE, ids=[c.__name__ for c, _, _ in TREE])
    def test_class_decides(self, cls: type[E.PomonaError], status: int, reason: R) -> None:
        """Each class has its status and reason; an instance carries only detail and context."""
        err = cls("what happened", udid="U1")
        assert (err.http_status, err.reason, err.detail, err.context) == (
            status,
            reason,
            "what happened",
            {"udid": "U1"},
        )

    def test_table_is_the_whole_tree(self) -> None:
        """Every error class of domain/errors.py is in the table above (AuthError is only a grouping, never
        raised; PolicyError takes its reason per instance and is tested apart)."""
        assert tree_classes() - {E.AuthError, E.PolicyError} == {c for c, _, _ in TREE}

    def test_storage_faults_are_internal_errors(self) -> None:
        """A storage fault is no refusal: answered as INTERNAL_ERROR, a busy database with 503, one that
        does not answer with 503 DATABASE_UNAVAILABLE; the cause stays internal."""
        busy = E.describe(E.StorageBusyError("lock wait"))
        assert (busy.status, busy.reason, busy.internal) == (503, R.INTERNAL_ERROR, True)
        away = E.describe(E.StorageUnavailableError('database "pomona" does not exist'))
        assert (away.status, away.reason, away.internal) == (503, R.DATABASE_UNAVAILABLE, True)
        assert "pomona" not in away.message and "pomona" in away.detail
        assert not issubclass(E.StorageError, E.PomonaError)

    def test_docstring_draws_every_class(self) -> None:
        """The module docstring's tree names every class."""
        doc = E.__doc__ or ""
        for cls in tree_classes():
            assert f" {cls.__name__} " in doc, cls.__name__

    @pytest.mark.parametrize("name", ["http_status", "reason"])
    def test_raise_site_cannot_choose(self, name: str) -> None:
        """Passing http_status= or reason= where an error is raised is refused: a subclass says it."""
        with pytest.raises(TypeError):
            E.MalformedRequestError("too big", **{name: 413})

    def test_policy_error_reason_per_instance(self) -> None:
        """A policy refusal carries the decision's reason; its status stays the class's 403."""
        err = E.PolicyError("limit", reason=R.DEVICE_LIMIT_REACHED, count=3)
        assert (err.reason, err.http_status, err.context) == (R.DEVICE_LIMIT_REACHED, 403, {"count": 3})
        assert E.PolicyError("x", reason=R.USER_DISABLED).reason is R.USER_DISABLED

    def test_unknown_tenant_is_unknown_enrollment(self) -> None:
        """An unknown tenant in a device URL is refused like an unknown enrollment."""
        assert issubclass(E.UnknownTenantError, E.UnknownEnrollmentError)


class TestFromProtocol:
    @pytest.mark.parametrize(
        ("exc", "cls"),
        [
            (PlistTooLargeError(10, 5), E.BodyTooLargeError),
            (PlistError("not a plist"), E.MalformedRequestError),
            (CheckinParseError("no UDID", raw=b""), E.MalformedRequestError),
            (CmsError("signature does not verify"), E.SignatureInvalidError),
            (CsrSignatureError("bad CSR signature"), E.SignatureInvalidError),
            (ScepMalformedError("not a pkiMessage"), E.MalformedRequestError),
            (MachineInfoMalformedError("no UDID"), E.AdeMachineInfoMalformedError),
            (MachineInfoTamperedError("digest differs"), E.AdeSignatureInvalidError),
            (MachineInfoChainError("another CA"), E.AdeSignerUntrustedError),
            (ProtocolError("anything else"), E.MalformedRequestError),
        ],
        ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.__name__,
    )
    def test_maps(self, exc: ProtocolError, cls: type[E.PomonaError]) -> None:
        """Each wire-format failure becomes the refusal of its kind, keeping its text as detail."""
        err = E.from_protocol(exc, udid="U1")
        assert type(err) is cls and err.detail == str(exc) and err.context == {"udid": "U1"}

    def test_cms_and_scep_errors_are_protocol_errors(self) -> None:
        """CmsError and ScepMalformedError are in the protocol tree (and still ValueErrors)."""
        from pomona.protocol import cms, scep

        assert cms.CmsError is CmsError and scep.ScepMalformedError is ScepMalformedError
        assert issubclass(CmsError, ProtocolError) and issubclass(ScepMalformedError, ValueError)


class TestDescribe:
    def test_pomona_error(self) -> None:
        """Our errors say their status and reason; the message is their detail."""
        e = E.describe(E.CertNotTrustedError("another tenant's identity", fingerprint="ab"))
        assert (e.status, e.reason, e.message, e.detail) == (
            401,
            R.CERT_NOT_TRUSTED,
            "another tenant's identity",
            "another tenant's identity",
        )
        assert e.context == {"fingerprint": "ab"} and not e.internal and e.apple_code is None

    def test_empty_detail_shows_the_reason(self) -> None:
        """An error raised without detail still has a message: its reason."""
        assert E.describe(E.NotFoundError()).message == "NOT_FOUND"

    def test_apple_code(self) -> None:
        """An unenroll answer carries Apple's error code."""
        e = E.describe(E.DeviceBlockedError("blocked"))
        assert (e.status, e.reason, e.apple_code) == (403, R.DEVICE_BLOCKED, "com.apple.unrecognized.device")

    def test_protocol_error(self) -> None:
        """A protocol error that escapes is a refusal, not a fault."""
        e = E.describe(PlistTooLargeError(10, 5))
        assert (e.status, e.reason, e.internal) == (413, R.MALFORMED_REQUEST, False)

    def test_unknown_exception_is_internal(self) -> None:
        """Anything else is INTERNAL_ERROR 500; its cause stays in detail, never in the message."""
        e = E.describe(KeyError("secret-column"))
        assert (e.status, e.reason, e.internal) == (500, R.INTERNAL_ERROR, True)
        assert "secret-column" not in e.message and "secret-column" in e.detail


class TestDeviceSurface:
    def test_refusal(self) -> None:
        """Device endpoints get the class's status and {reason, message, request_id}."""
        from pomona.http.root import device_error

        status, body, ctype = device_error(E.BodyTooLargeError("body larger than 5 bytes"), "rid1")
        assert (status, ctype) == (413, "application/json")
        assert json.loads(body) == {
            "reason": "MALFORMED_REQUEST",
            "message": "body larger than 5 bytes",
            "request_id": "rid1",
        }

    def test_unenroll_body(self) -> None:
        """A blocked device gets Apple's 403 com.apple.unrecognized.device body, so it unenrolls."""
        from pomona.http.root import device_error

        status, body, _ = device_error(E.DeviceBlockedError("this device is blocked"), "rid2")
        assert status == 403
        assert json.loads(body) == {
            "code": "com.apple.unrecognized.device",
            "description": "this device is blocked",
            "reason": "DEVICE_BLOCKED",
            "request_id": "rid2",
        }

    def test_internal_error_hides_the_cause(self, caplog: pytest.LogCaptureFixture) -> None:
        """An unknown exception is a 500 INTERNAL_ERROR with no trace of its cause; the log has it."""
        from pomona.http.root import device_error

        status, body, _ = device_error(RuntimeError("db password is hunter2"), "rid3")
        assert status == 500 and b"hunter2" not in body and json.loads(body)["reason"] == "INTERNAL_ERROR"
        assert "rid3" in caplog.text and "hunter2" in caplog.text


class TestApiSurface:
    def test_refusal(self) -> None:
        """The admin API answers {reason, message, request_id} with the class's status."""
        from pomona.http.api import api_error

        r = api_error(E.LicensesExhaustedError("all 3 seats are assigned"), "rid4")
        assert r.status_code == 409
        assert json.loads(bytes(r.body)) == {
            "reason": "LICENSES_EXHAUSTED",
            "message": "all 3 seats are assigned",
            "request_id": "rid4",
        }

    def test_validation_error(self) -> None:
        """A body that does not validate is INVALID_INPUT 422."""
        from fastapi.exceptions import RequestValidationError

        from pomona.http.api import api_error

        r = api_error(RequestValidationError([{"loc": ("body", "seats"), "msg": "not an int"}]), "rid5")
        assert r.status_code == 422
        body = json.loads(bytes(r.body))
        assert body["reason"] == "INVALID_INPUT" and "body.seats" in body["message"]

    def test_internal_error_hides_the_cause(self) -> None:
        """An unknown exception is 500 INTERNAL_ERROR, 'internal error', nothing more."""
        from pomona.http.api import api_error

        r = api_error(ValueError("hunter2"), "rid6")
        assert r.status_code == 500
        assert json.loads(bytes(r.body)) == {
            "reason": "INTERNAL_ERROR",
            "message": "internal error",
            "request_id": "rid6",
        }


class TestCliSurface:
    def test_refusal(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A refusal is one line on stderr with its reason, and exit code 2."""
        from pomona.cli.main import cli_error

        assert cli_error(E.NotFoundError("no tenant 'x'"), as_json=False) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "NOT_FOUND" in err

    def test_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        """With --json the refusal is one JSON object on stdout."""
        from pomona.cli.main import cli_error

        assert cli_error(E.InvalidInputError("bad"), as_json=True) == 2
        assert json.loads(capsys.readouterr().out) == {"reason": "INVALID_INPUT", "message": "bad"}

    def test_internal_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An internal error is one line (no traceback) and exit code 1."""
        from pomona.cli.main import cli_error

        assert cli_error(RuntimeError("boom"), as_json=False) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "INTERNAL_ERROR" in err and "Traceback" not in err

    def test_command_maps_errors(self) -> None:
        """A command wrapped by `common` exits with the mapper's code instead of raising."""
        import click
        from click.testing import CliRunner

        from pomona.cli.main import common

        @click.command()
        @common
        def refuse() -> None:
            raise E.ConflictError("taken")

        @click.command()
        @common
        def crash() -> None:
            raise RuntimeError("boom")

        runner = CliRunner()
        refused, crashed = runner.invoke(refuse, []), runner.invoke(crash, [])
        assert (refused.exit_code, crashed.exit_code) == (2, 1)
        assert "ALREADY_EXISTS" in refused.output and "Traceback" not in crashed.output
        assert isinstance(crashed.exception, SystemExit)
