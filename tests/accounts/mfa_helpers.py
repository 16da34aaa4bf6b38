"""The second factor's side of the tests: a person's authenticator app (codes computed with
pyotp from the secret the API returned, as an app does), and the steps of enrolling and signing
in, through HTTP."""

import itertools
import time

import pyotp
from rest_framework.test import APIClient

from tests.factories import DEFAULT_PASSWORD
from tests.helpers import API, TOKEN, assert_problem

MFA = f"{API}/auth/mfa/"
TOTP = f"{MFA}totp/"
CONFIRM = f"{TOTP}confirm/"
RECOVERY_CODES = f"{MFA}recovery-codes/"
TOKEN_MFA = f"{API}/auth/token/mfa/"

STEP = 30  # seconds, RFC 6238's default, which every authenticator app assumes

_addresses = itertools.count(1)


def new_address() -> str:
    """A client address no other test of this run uses: the sign-in failure windows are kept in
    Redis from one test to the next."""
    n = next(_addresses)
    return f"10.{200 + ((n >> 16) & 31)}.{(n >> 8) & 255}.{n & 255}"


def away_from_a_step_boundary() -> None:
    """Wait out the last two seconds of a time step, so that a code computed now for an offset
    is judged by the server in the same step (a test of the ±1 step allowed must not straddle
    two steps)."""
    into_step = time.time() % STEP
    if into_step > STEP - 2:
        time.sleep(STEP - into_step + 0.05)


class Authenticator:
    """A person's authenticator app, holding the secret the API returned.

    The server accepts each code once, and no code older than the last one it accepted, within
    ±1 step of its clock: `fresh_code()` gives the next code the server has not seen (the current
    step's, then the next step's), as a person does who waits for the app to show a new one.
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.totp = pyotp.TOTP(secret)  # SHA-1, 6 digits, 30 s: the defaults of every app
        self.last_step: int | None = None

    def at(self, offset_seconds: float = 0) -> str:
        """The code the app would show `offset_seconds` from now (a clock off by that much)."""
        return self.totp.at(time.time() + offset_seconds)

    def fresh_code(self) -> str:
        now_step = int(time.time()) // STEP
        step = now_step if self.last_step is None else max(now_step, self.last_step + 1)
        if step > now_step + 1:
            # The codes the server would take now are spent: wait for the app's next one.
            time.sleep((now_step + 1) * STEP - time.time() + 0.05)
            return self.fresh_code()
        self.last_step = step
        return self.totp.at(step * STEP)

    def codes_around_now(self, steps: int = 3) -> set[str]:
        now = time.time()
        return {self.totp.at(now + n * STEP) for n in range(-steps, steps + 1)}

    def wrong_code(self) -> str:
        """Six digits that are no code of this secret anywhere near now."""
        near = self.codes_around_now()
        return next(f"{n:06d}" for n in itertools.count(123456) if f"{n:06d}" not in near)


def enroll(client: APIClient) -> dict:
    """POST /auth/mfa/totp/: the secret and its otpauth URL (not active yet)."""
    response = client.post(TOTP, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def confirm(client: APIClient, code: str):
    return client.post(CONFIRM, {"code": code}, format="json")


def activate(client: APIClient) -> tuple[Authenticator, list[str]]:
    """Enrol and confirm with the app's first code: the app and the ten recovery codes."""
    app = Authenticator(enroll(client)["secret"])
    response = confirm(client, app.fresh_code())
    assert response.status_code == 200, response.content
    return app, response.json()["recovery_codes"]


def mfa_status(client: APIClient) -> dict:
    response = client.get(MFA)
    assert response.status_code == 200, response.content
    return response.json()


def password_step(
    user, *, tenant=None, password: str = DEFAULT_PASSWORD, address: str | None = None
):
    """POST /auth/token/ with the email and password, from `address` (a new one by default)."""
    body = {"email": user.email, "password": password}
    if tenant is not None:
        body["tenant"] = tenant.slug
    return APIClient().post(TOKEN, body, format="json", REMOTE_ADDR=address or new_address())


def mfa_token_of(user, *, tenant=None, address: str | None = None) -> str:
    """The right password of a person whose TOTP is active: the 401 mfa-required's token."""
    response = password_step(user, tenant=tenant, address=address)
    body = assert_problem(response, 401, "mfa-required")
    assert isinstance(body.get("mfa_token"), str), body
    assert body["mfa_token"]
    return body["mfa_token"]


def code_step(mfa_token: str, code: str, *, address: str | None = None):
    """POST /auth/token/mfa/ with the sign-in's mfa_token and a code."""
    return APIClient().post(
        TOKEN_MFA,
        {"mfa_token": mfa_token, "code": code},
        format="json",
        REMOTE_ADDR=address or new_address(),
    )


def bearer_client(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client
