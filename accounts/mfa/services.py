"""The second factor's life: enrolment, confirmation, removal, recovery codes, and the one check
every sign-in path runs (`verify_code`).

A code is a TOTP code (6 digits) or a recovery code (`XXXXX-XXXXX`, any case, the dash
optional). Each check locks the person's device row, so that a TOTP code (and every older one) is
accepted once even when two requests bring it at the same moment, and a recovery code is spent
once. A sign-in's failures count toward django-otp's throttling of the device (the wait before
the next code is looked at doubles: 1, 2, 4 … seconds) and toward the sign-in lockout
(kernel/ratelimit/sign_ins.py). A wrong code to remove the factor or renew the recovery codes is
refused with the change it came with, its throttling included (the request's transaction rolls
back): the lockout, which Redis keeps, counts those.

Every change is recorded in the audit log of each tenant the person belongs to, as a password
change is, and the person is emailed when their second factor is removed or a recovery code is
used: the two things an attacker holding their password would do.
"""

import base64
import io
import re
import secrets
from urllib.parse import quote, urlencode

import segno
from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.db import transaction
from django.utils import timezone
from django_otp.oath import TOTP

from accounts.actions import AccountsAction
from accounts.mfa import secrets as mfa_secrets
from accounts.models import RecoveryCode, TotpDevice
from accounts.services.users import record_account_change
from accounts.tasks import send_email_task
from kernel import audit
from kernel.problems import InvalidInput, Problem, ProblemType

# RFC 6238 as authenticator apps assume it, whatever they are told: SHA-1, 6 digits, 30 s.
STEP_SECONDS = 30
DIGITS = 6
# Codes of the step before and after are accepted too: a phone's clock a little off.
TOLERANCE_STEPS = 1
KEY_BYTES = 20
RECOVERY_CODES = 10
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TOTP_CODE = re.compile(r"^\d{6}$")
_RECOVERY_CODE = re.compile(r"^[A-Z2-7]{10}$")
INVALID_CODE = "The code is not valid."


# --- reads -------------------------------------------------------------------------------------


def active_device(user) -> TotpDevice | None:
    return TotpDevice.objects.filter(user=user, confirmed=True).first()


def is_active(user) -> bool:
    return TotpDevice.objects.filter(user=user, confirmed=True).exists()


def status(user) -> dict:
    return {
        "totp": is_active(user),
        "recovery_codes_remaining": RecoveryCode.objects.filter(
            user=user, used_at__isnull=True
        ).count(),
    }


# --- enrolment ---------------------------------------------------------------------------------


@transaction.atomic
def totp_begin(*, user) -> dict[str, str]:
    """A new secret for the person's authenticator: not in force until confirmed with a code.
    Starting again before confirming replaces the secret."""
    device = TotpDevice.objects.select_for_update().filter(user=user).first()
    if device is not None and device.confirmed:
        raise Problem(
            ProblemType.CONFLICT,
            detail="A second factor is active already: remove it before setting up another.",
        )
    key = secrets.token_bytes(KEY_BYTES)
    if device is None:
        device = TotpDevice(user=user, name="Authenticator app", confirmed=False)
    device.encrypted_key = mfa_secrets.encrypt(key)
    device.last_t = -1
    device.throttle_reset(commit=False)
    device.save()
    secret = base64.b32encode(key).decode()
    return {"secret": secret, "otpauth_url": otpauth_url(user, secret)}


def totp_pending_with_qr_code(user) -> dict[str, str]:
    """The secret waiting for confirmation (a new one when none waits), with its URL as a QR
    code (SVG), for a page that shows it until the person confirms: reloading the page, or a
    wrong code, keeps the secret their app has already taken."""
    device = TotpDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        started = totp_begin(user=user)
    else:
        secret = base64.b32encode(mfa_secrets.decrypt(device.encrypted_key)).decode()
        started = {"secret": secret, "otpauth_url": otpauth_url(user, secret)}
    return {**started, "qr_svg": qr_svg(started["otpauth_url"])}


def qr_svg(text: str) -> str:
    """`text` as a QR code, an SVG element (no XML declaration) to put in a page."""
    out = io.BytesIO()
    segno.make(text, error="m").save(
        out, kind="svg", xmldecl=False, svgns=True, scale=5, title="QR code of the secret"
    )
    return out.getvalue().decode()


@transaction.atomic
def totp_confirm(*, user, code: str) -> list[str]:
    """Put the pending secret in force with a first code from the authenticator; the ten
    recovery codes, shown this once."""
    device = TotpDevice.objects.select_for_update().filter(user=user).first()
    if device is None or device.confirmed:
        raise Problem(
            ProblemType.CONFLICT,
            detail="No second factor is waiting for confirmation: start with POST "
            "/api/v1/auth/mfa/totp/.",
        )
    if _checked(device, code, recovery=False) is None:
        raise InvalidInput({"code": [INVALID_CODE]})
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    codes = _new_recovery_codes(user)
    _record(user, AccountsAction.USER_MFA_ENABLED)
    return codes


@transaction.atomic
def totp_remove(*, user, code: str) -> None:
    """Remove the second factor, with a code (TOTP or recovery) to show it is the person."""
    device = _locked_active_device(user)
    if _checked(device, code, recovery=True) is None:
        raise InvalidInput({"code": [INVALID_CODE]})
    device.delete()
    RecoveryCode.objects.filter(user=user).delete()
    _record(user, AccountsAction.USER_MFA_DISABLED)
    _email(
        user,
        subject="Two-factor authentication was turned off",
        body=(
            "Two-factor authentication was turned off for your account. If this was not you, "
            "change your password now and turn it on again."
        ),
    )


@transaction.atomic
def recovery_codes_regenerate(*, user, code: str) -> list[str]:
    """Ten new recovery codes; the old ones stop working."""
    device = _locked_active_device(user)
    if _checked(device, code, recovery=True) is None:
        raise InvalidInput({"code": [INVALID_CODE]})
    codes = _new_recovery_codes(user)
    _record(user, AccountsAction.USER_RECOVERY_CODES_REGENERATED)
    return codes


# --- signing in --------------------------------------------------------------------------------


@transaction.atomic
def verify_code(*, user, code: str) -> bool:
    """Whether `code` is the person's second factor now: a TOTP code not used before, or an
    unused recovery code (then spent, recorded and emailed about)."""
    device = TotpDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
    if device is None:
        return False
    used = _checked(device, code, recovery=True)
    if used == "recovery":
        _record(user, AccountsAction.USER_RECOVERY_CODE_USED)
        remaining = RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()
        _email(
            user,
            subject="A recovery code was used to sign in",
            body=(
                "A recovery code was used to sign in to your account; "
                f"{remaining} remain. If this was not you, change your password now."
            ),
        )
    return used is not None


def totp_matches(device: TotpDevice, code: str) -> bool:
    """Whether `code` is the device's code for now (±1 step) and newer than the last one
    accepted; the device is saved with what it learnt. The caller holds the device's row lock."""
    if not _TOTP_CODE.match(code):
        return False
    totp = TOTP(mfa_secrets.decrypt(device.encrypted_key), STEP_SECONDS, 0, DIGITS)
    if not totp.verify(int(code), TOLERANCE_STEPS, device.last_t + 1):
        return False
    # The drift is not learnt (django-otp's OTP_TOTP_SYNC would): each code accepted a step
    # ahead would move the window a step further, until codes of minutes ahead passed.
    device.last_t = totp.t()
    device.throttle_reset(commit=False)
    device.set_last_used_timestamp(commit=False)
    device.save()
    return True


def otpauth_url(user, secret: str) -> str:
    """The Key Uri Format authenticator apps read (from a QR code or a link)."""
    issuer = settings.MFA_ISSUER.replace(":", "")
    # The colon stays a colon: apps split the label on it (Key Uri Format).
    label = f"{quote(issuer)}:{quote(user.email)}"
    parameters = urlencode(
        {
            "secret": secret,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_SECONDS,
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{parameters}"


# --- helpers -----------------------------------------------------------------------------------


def _locked_active_device(user) -> TotpDevice:
    device = TotpDevice.objects.select_for_update().filter(user=user, confirmed=True).first()
    if device is None:
        raise Problem(ProblemType.CONFLICT, detail="No second factor is active.")
    return device


def _checked(device: TotpDevice, code: str, *, recovery: bool) -> str | None:
    """ "totp" or "recovery" when `code` is right (a recovery code is spent), else None, the
    failure counted by the device's throttling. While the device is throttled, no code is looked
    at: a guess then is a failure like any other."""
    allowed, _ = device.verify_is_allowed()
    normalized = code.strip().replace("-", "").replace(" ", "").upper() if code else ""
    if allowed:
        if totp_matches(device, normalized):
            return "totp"
        if recovery and _RECOVERY_CODE.match(normalized) and _spend_recovery(device, normalized):
            return "recovery"
    device.throttle_increment(commit=True)
    return None


def _spend_recovery(device: TotpDevice, code: str) -> bool:
    for candidate in RecoveryCode.objects.select_for_update().filter(
        user_id=device.user_id, used_at__isnull=True
    ):
        if check_password(code, candidate.digest):
            candidate.used_at = timezone.now()
            candidate.save(update_fields=["used_at"])
            device.throttle_reset(commit=True)
            return True
    return False


def _new_recovery_codes(user) -> list[str]:
    RecoveryCode.objects.filter(user=user).delete()
    codes = ["".join(secrets.choice(_BASE32) for _ in range(10)) for _ in range(RECOVERY_CODES)]
    RecoveryCode.objects.bulk_create(
        RecoveryCode(user=user, digest=make_password(code)) for code in codes
    )
    return [f"{code[:5]}-{code[5:]}" for code in codes]


def _record(user, action: str) -> None:
    """The event in the log of every tenant the person belongs to (a tenant that requires a
    second factor holds them without one, so their access is re-read there too), with nothing
    secret in it; in the platform's log for a person of no tenant (an operator)."""
    if not record_account_change(user, action):
        audit.record_platform(
            action=action, target_type="user", target_id=user.pk, actor=audit.Actor.user(user)
        )


def _email(user, *, subject: str, body: str) -> None:
    transaction.on_commit(lambda: send_email_task.delay(to=user.email, subject=subject, body=body))
