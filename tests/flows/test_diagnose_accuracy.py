"""The diagnose accuracy suite (tests/accuracy.py): every refusal a device can hit, diagnosed with every
message it could show, with none, in both languages, by user, serial and both; and each twin."""

from __future__ import annotations

import pytest

from accuracy import DEVICE_ROWS, REFUSALS, Matrix, run_device_row, run_refusal
from diag_helpers import World
from pomona.services.diagnose import to_json
from pomona.testing.virtual_device import EnrollmentRefused


def _report(m: Matrix) -> str:
    return "\n".join(
        f"{c.case} present={c.present} message={c.message} by={c.lookup} {c.lang}: {c.answer} {c.verdict}"
        for c in m.wrong[:20]
    )


class TestRefusals:
    @pytest.mark.parametrize("code", sorted(REFUSALS))
    def test_refusal_is_the_answer(self, w: World, code: str) -> None:
        """Every message, lookup and language answers with the refusal's code, proven."""
        m = Matrix()
        run_refusal(w, m, code, True)
        assert m.applicable and not m.wrong, _report(m)

    @pytest.mark.parametrize("code", sorted(REFUSALS))
    def test_twin_never_answers_the_code(self, w: World, code: str) -> None:
        """With the cause absent, no message, lookup or language answers with the code."""
        m = Matrix()
        run_refusal(w, m, code, False)
        assert m.applicable and not m.wrong, _report(m)


class TestDeviceSide:
    @pytest.mark.parametrize(
        "i", range(len(DEVICE_ROWS)), ids=[f"{r.message}-{r.reproduce.__name__}" for r in DEVICE_ROWS]
    )
    def test_device_cause_is_likely(self, w: World, i: int) -> None:
        """A document row whose cause is on the device: with the server side clean, it comes first, likely."""
        m = Matrix()
        run_device_row(w, m, DEVICE_ROWS[i], True)
        assert m.applicable and not m.wrong, _report(m)

    @pytest.mark.parametrize(
        "i", range(len(DEVICE_ROWS)), ids=[f"{r.message}-{r.reproduce.__name__}" for r in DEVICE_ROWS]
    )
    def test_refusal_outranks_the_device(self, w: World, i: int) -> None:
        """With a refusal in the attempt, the device-side cause is not the answer."""
        m = Matrix()
        run_device_row(w, m, DEVICE_ROWS[i], False)
        assert m.applicable and not m.wrong, _report(m)


class TestTenantFaultsAside:
    def test_missing_cname_and_platform_refusal(self, w: World) -> None:
        """A missing CNAME and a device refused for its platform: the platform is the answer, DNS is
        listed under also_wrong, and the finding names the step the device reached."""
        del w.zone.cnames[f"enterpriseenrollment.{w.s.name}.example"]
        w.p.policy.edit_restriction(w.s.name, type_="platform", default=True, ipados="block")
        d = w.device(product="iPad13,18")
        with pytest.raises(EnrollmentRefused):
            d.enroll()
        msg = "Profile Installation Failed. Connection to the server could not be established."
        for lang in ("en", "zh-CN"):
            r = to_json(w.p.diagnose.diagnose(w.s.name, upn=w.s.upn, message=msg), lang)
            assert (r["answer"]["code"], r["answer"]["verdict"]) == ("PLATFORM_BLOCKED", "proven")  # type: ignore[index]
            also = {f["code"]: f for f in r["also_wrong"]}  # type: ignore[attr-defined]
            assert "DNS_ENROLLMENT_CNAME_MISSING" in also
            worked = "so DNS discovery worked" if lang == "en" else "因此「DNS 发现」正常"
            assert worked in also["DNS_ENROLLMENT_CNAME_MISSING"]["observed"]
            assert "DNS_ENROLLMENT_CNAME_MISSING" not in [f["code"] for f in r["findings"]]  # type: ignore[attr-defined]

    def test_missing_cname_alone_with_no_attempt(self, w: World) -> None:
        """With no attempt in the log and the connection message, the missing CNAME is the answer."""
        del w.zone.cnames[f"enterpriseenrollment.{w.s.name}.example"]
        msg = "Profile Installation Failed. Connection to the server could not be established."
        r = to_json(w.p.diagnose.diagnose(w.s.name, upn=w.s.upn, message=msg), "en")
        assert r["answer"]["code"] == "DNS_ENROLLMENT_CNAME_MISSING"  # type: ignore[index]

    def test_expired_link_by_user_without_message(self, w: World) -> None:
        """An expired link, diagnosed by user with no message: the expiry is the answer, not DNS."""
        from accuracy import token_expired

        del w.zone.cnames[f"enterpriseenrollment.{w.s.name}.example"]
        token_expired(w, True)
        r = to_json(w.p.diagnose.diagnose(w.s.name, upn=w.s.upn), "en")
        assert (r["answer"]["code"], r["answer"]["verdict"]) == ("ENROLLMENT_TOKEN_EXPIRED", "proven")  # type: ignore[index]
        assert "DNS_ENROLLMENT_CNAME_MISSING" in [f["code"] for f in r["also_wrong"]]  # type: ignore[attr-defined]
