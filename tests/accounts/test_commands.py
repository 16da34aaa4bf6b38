"""The two operator commands: create_tenant and create_operator."""

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from kernel.tenancy.models import Membership, Tenant
from tests.factories import DEFAULT_PASSWORD, make_tenant, make_user
from tests.helpers import ME, outcome, sign_in

pytestmark = pytest.mark.django_db

User = get_user_model()
OPERATOR_PASSWORD = "operators own passphrase 9"


def run(name: str, *args, stdin: str | None = None) -> str:
    out = io.StringIO()
    extra = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command(name, *args, stdout=out, stderr=io.StringIO(), **extra)
    return out.getvalue()


# --- create_tenant --------------------------------------------------------------------------


def test_create_tenant_makes_the_owner_and_prints_their_password_once():
    output = run(
        "create_tenant", "--name", "Globex", "--slug", "globex", "--owner-email", "CEO@Globex.com"
    )

    tenant = Tenant.objects.get(slug="globex")
    assert (tenant.name, tenant.plan.code) == ("Globex", "free")
    (password,) = re.findall(r"with the password (\S+)", output)
    # The printed password signs the owner in, as the owner.
    client = APIClient()
    sign_in(client, User.objects.get(email="ceo@globex.com"), tenant, password=password)
    assert client.get(ME).json()["roles"] == ["owner"]


def test_create_tenant_for_an_existing_user_keeps_their_password():
    owner = make_user(email="founder@example.com")

    output = run(
        "create_tenant",
        *("--name", "Second", "--slug", "second", "--owner-email", owner.email),
        *("--plan", "pro"),
    )

    assert "password" not in output
    assert Tenant.objects.get(slug="second").plan.code == "pro"
    owner.refresh_from_db()
    assert owner.check_password(DEFAULT_PASSWORD)


def test_create_tenant_again_with_the_same_owner_changes_nothing():
    args = ("--name", "Initech", "--slug", "initech", "--owner-email", "bill@initech.com")
    run("create_tenant", *args)

    output = run("create_tenant", *args)

    assert "nothing to do" in output
    assert Tenant.objects.filter(slug="initech").count() == 1
    with outcome():
        assert Membership.objects.filter(tenant__slug="initech").count() == 1


def test_create_tenant_refuses_a_slug_taken_by_someone_else():
    taken = make_tenant()

    with pytest.raises(CommandError, match="taken"):
        run("create_tenant", "--name", "X", "--slug", taken.slug, "--owner-email", "x@example.com")

    assert not User.objects.filter(email="x@example.com").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--name", "Ok", "--slug", "no spaces", "--owner-email", "a@example.com"), "--slug"),
        (("--name", "Ok", "--slug", "ok", "--owner-email", "not-an-email"), "--owner-email"),
        (("--name", "  ", "--slug", "ok", "--owner-email", "a@example.com"), "--name"),
        (
            ("--name", "Ok", "--slug", "ok", "--owner-email", "a@example.com", "--plan", "gold"),
            "No plan 'gold'",
        ),
    ],
)
def test_create_tenant_refuses_bad_input_and_creates_nothing(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run("create_tenant", *args)

    assert not Tenant.objects.filter(slug="ok").exists()
    assert not User.objects.filter(email="a@example.com").exists()


# --- create_operator -----------------------------------------------------------------------


def test_create_operator_from_stdin_makes_a_staff_superuser_who_reaches_the_admin():
    output = run(
        "create_operator", "--email", "Ops@Example.com", "--password-stdin",
        stdin=f"{OPERATOR_PASSWORD}\n",
    )  # fmt: skip

    assert "Created the operator ops@example.com" in output
    operator = User.objects.get(email="ops@example.com")
    assert (operator.is_staff, operator.is_superuser) == (True, True)
    client = Client()
    assert client.login(email="ops@example.com", password=OPERATOR_PASSWORD)
    assert client.get("/admin/").status_code == 200


def test_create_operator_prompts_for_the_password_when_not_piped(monkeypatch):
    prompts = iter([OPERATOR_PASSWORD, OPERATOR_PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(prompts))

    run("create_operator", "--email", "prompted@example.com")

    assert User.objects.get(email="prompted@example.com").check_password(OPERATOR_PASSWORD)


def test_create_operator_refuses_mismatched_prompted_passwords(monkeypatch):
    prompts = iter([OPERATOR_PASSWORD, "something else entirely"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(prompts))

    with pytest.raises(CommandError, match="do not match"):
        run("create_operator", "--email", "typo@example.com")

    assert not User.objects.filter(email="typo@example.com").exists()


@pytest.mark.parametrize(
    ("stdin", "message"), [("\n", "no password"), ("password\n", "too common")]
)
def test_create_operator_refuses_a_missing_or_weak_password(stdin, message):
    with pytest.raises(CommandError, match=message):
        run("create_operator", "--email", "weak@example.com", "--password-stdin", stdin=stdin)

    assert not User.objects.filter(email="weak@example.com").exists()


def test_create_operator_refuses_a_bad_email():
    with pytest.raises(CommandError, match="--email"):
        run("create_operator", "--email", "nope", "--password-stdin", stdin="x\n")


def test_the_password_is_never_an_argument():
    with pytest.raises(TypeError):
        call_command("create_operator", email="a@example.com", password=OPERATOR_PASSWORD)


def test_create_operator_promotes_an_existing_user_and_keeps_their_password():
    make_user(email="member@example.com")

    first = run("create_operator", "--email", "member@example.com")
    second = run("create_operator", "--email", "member@example.com")

    user = User.objects.get(email="member@example.com")
    assert (user.is_staff, user.is_superuser) == (True, True)
    assert user.check_password(DEFAULT_PASSWORD)
    assert "now an operator" in first
    assert "already" in second
