"""Writes on accounts: sign-up, passwords. Keyword-only, one transaction each."""

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.tokens import default_token_generator
from django.db import IntegrityError, transaction
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.sessions import issue_tokens
from accounts.tasks import send_email_task
from core.problems import Problem, ProblemType
from tenants.models import Tenant
from tenants.principals import access_changed
from tenants.selectors import tenants_of_user
from tenants.services import tenant_create, tenant_slug_from_name

User = get_user_model()


def signup(
    *, email: str, password: str, name: str, tenant_name: str, tenant_slug: str | None = None
):
    """A new user who owns a new tenant, signed in to it."""
    email = User.objects.normalize_email(email)
    slug = tenant_slug or tenant_slug_from_name(tenant_name)
    with transaction.atomic():
        if User.objects.filter(email=email).exists():
            raise Problem(ProblemType.CONFLICT, detail="An account with this email exists.")
        if Tenant.objects.filter(slug=slug).exists():
            raise Problem(ProblemType.CONFLICT, detail=f"The tenant slug '{slug}' is taken.")
        try:
            with transaction.atomic():
                user = User.objects.create_user(email, password, name=name)
                tenant = tenant_create(name=tenant_name, slug=slug, owner=user)
        except IntegrityError as exc:  # lost a race for the same email or slug
            raise Problem(ProblemType.CONFLICT, detail="The email or slug was just taken.") from exc
    return user, tenant, issue_tokens(user=user, tenant=tenant)


def _set_password(user, new_password: str) -> None:
    """Every token issued before is refused from now on: they carry a digest of the old hash,
    and the cached principals holding it are invalidated in each of the user's tenants."""
    password_validation.validate_password(new_password, user)
    user.set_password(new_password)
    user.save(update_fields=["password"])
    for tenant in tenants_of_user(user_id=user.id):
        access_changed(tenant.id)


@transaction.atomic
def password_change(*, user, tenant, new_password: str) -> dict[str, str]:
    """Set a new password and sign in afresh to `tenant`."""
    _set_password(user, new_password)
    return issue_tokens(user=user, tenant=tenant)


def password_reset_request(*, email: str) -> None:
    """Email a single-use reset link if the account exists; say nothing either way."""
    user = User.objects.filter(email=User.objects.normalize_email(email), is_active=True).first()
    if user is None:
        return
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    link = settings.PASSWORD_RESET_URL.format(uid=uid, token=token)
    transaction.on_commit(
        lambda: send_email_task.delay(
            to=user.email,
            subject="Reset your password",
            body=f"Use this link within {settings.PASSWORD_RESET_TIMEOUT // 60} minutes to "
            f"choose a new password:\n\n{link}\n\nIf you did not ask for it, ignore this email.",
        )
    )


def password_reset_confirm(*, user, token: str, new_password: str) -> None:
    # The token is tied to the current password hash, so it works once: using it changes the hash.
    if not default_token_generator.check_token(user, token):
        raise Problem(ProblemType.VALIDATION_ERROR, detail="The reset link is invalid or expired.")
    with transaction.atomic():
        _set_password(user, new_password)
