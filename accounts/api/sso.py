"""Single sign-on over HTTP (accounts/sso/, docs/security.md "Single sign-on"). Thin: the
provider module speaks OpenID Connect, the services decide who signs in.

- `PUT/GET/DELETE /tenant/sso/`: the tenant's connection (owner only to change; the client
  secret is write-only);
- `GET /auth/sso/{tenant_slug}/start/?redirect_uri=…`: off to the provider, with a cookie that
  binds the sign-in to this browser;
- `GET /auth/sso/callback/`: back from the provider; on success, on to the tenant's front end with
  a one-time `code`;
- `POST /auth/token/sso/` `{"code"}`: the tokens.
"""

import ipaddress
import secrets
import urllib.parse

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_domain_name
from django.http import HttpResponseRedirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.reverse import reverse

from accounts.api.serializers import TokenPairSerializer
from accounts.api.views import PublicAPIView
from accounts.models import SsoConnection
from accounts.sessions import issue_tokens
from accounts.sso import flows, provider
from accounts.sso import services as sso
from kernel import ratelimit
from kernel.api.base import TenantAPIView, validated_input
from kernel.context import tenant_context
from kernel.fields import StrictBooleanField
from kernel.openapi import problem
from kernel.permissions import Perm
from kernel.problems import InvalidInput, Problem, ProblemType
from kernel.tenancy.models import Membership, Role, Tenant

User = get_user_model()
BROWSER_COOKIE = "sso_browser"
MAX_DOMAINS = 50
MAX_REDIRECT_URIS = 20
MAX_CLIENT_STATE = 512
NOT_CONFIGURED = "Single sign-on is not configured for this tenant."
PROVIDER_DOWN = problem(
    502, "The identity provider could not be reached (identity-provider-unavailable)."
)
SIGN_IN_FAILED = problem(401, "The sign-in cannot go on: `detail` says why (sso-failed).")


# --- the tenant's connection ------------------------------------------------------------------


class DomainField(serializers.CharField):
    """A domain name as it follows the @ of an email: lower-case, in its ASCII (IDNA) form."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 253)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data).strip().rstrip(".").lower()
        try:
            value = value.encode("idna").decode("ascii")
            validate_domain_name(value)
        except (UnicodeError, DjangoValidationError) as exc:
            raise serializers.ValidationError("Enter a domain name, such as example.com.") from exc
        if "." not in value or _is_ip(value):
            raise serializers.ValidationError("Enter a domain name, such as example.com.")
        return value


class FrontEndRedirectField(serializers.CharField):
    """Where the tenant's front end takes the one-time code: https, or http on loopback (local
    development), no fragment and no user info; matched exactly."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 2000)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        parsed = urllib.parse.urlsplit(value)
        host = parsed.hostname or ""
        if (
            parsed.scheme not in ("https", "http")
            or not host
            or parsed.fragment
            or "@" in parsed.netloc
            or (parsed.scheme == "http" and not _is_loopback(host))
        ):
            raise serializers.ValidationError(
                "Enter an https URL (http only on loopback), without a fragment."
            )
        return value


class SsoConnectionInputSerializer(serializers.Serializer):
    issuer = serializers.URLField(
        max_length=255,
        help_text="The provider's issuer, exactly as its discovery document names it; https.",
    )
    client_id = serializers.CharField(max_length=255)
    client_secret = serializers.CharField(
        max_length=1024,
        required=False,
        write_only=True,
        style={"input_type": "password"},
        help_text="Required the first time; left out, the stored one is kept. Never shown.",
    )
    domains = serializers.ListField(
        child=DomainField(), min_length=1, max_length=MAX_DOMAINS,
        help_text="The email domains of the tenant's people: these sign in through the provider.",
    )  # fmt: skip
    redirect_uris = serializers.ListField(
        child=FrontEndRedirectField(), min_length=1, max_length=MAX_REDIRECT_URIS,
        help_text="Where the tenant's front end takes the one-time code (exact match).",
    )  # fmt: skip
    enforced = StrictBooleanField(
        required=False,
        default=False,
        help_text="People of these domains may not sign in with a password (owners still may: "
        "the break-glass path, audited).",
    )
    default_role = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="The role of people who become members on their first sign-in (by default the "
        "built-in viewer role); never the owner role.",
    )

    def validate_default_role(self, value):
        if value is None:
            return None
        role = Role.objects.filter(pk=value).first()
        if role is None:
            raise serializers.ValidationError("No role of this tenant has this id.")
        return role


class SsoConnectionSerializer(serializers.ModelSerializer):
    default_role = serializers.UUIDField(source="default_role_id", read_only=True)
    callback_url = serializers.SerializerMethodField(
        help_text="The redirect URI to register at the provider for this client."
    )

    class Meta:
        model = SsoConnection
        fields = [
            "issuer",
            "client_id",
            "domains",
            "redirect_uris",
            "enforced",
            "default_role",
            "callback_url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_callback_url(self, connection) -> str:
        return callback_url(self.context["request"])


class TenantSsoView(TenantAPIView):
    """The tenant's identity provider. Changing or removing it is for owners only."""

    model = SsoConnection
    required_permissions = {
        "get": Perm.TENANT_MANAGE,
        "put": Perm.TENANT_MANAGE,
        "delete": Perm.TENANT_MANAGE,
    }

    @extend_schema(
        responses={200: SsoConnectionSerializer, **problem(404, "Not configured (not-found).")}
    )
    def get(self, request, version):
        connection = sso.connection_of(self.principal.tenant)
        if connection is None:
            raise Problem(ProblemType.NOT_FOUND, detail=NOT_CONFIGURED)
        return Response(SsoConnectionSerializer(connection, context={"request": request}).data)

    @extend_schema(
        request=SsoConnectionInputSerializer,
        responses={200: SsoConnectionSerializer, **PROVIDER_DOWN},
    )
    def put(self, request, version):
        data = validated_input(self, SsoConnectionInputSerializer)
        connection = sso.sso_configure(tenant=self.principal.tenant, actor=self.principal, **data)
        return Response(SsoConnectionSerializer(connection, context={"request": request}).data)

    @extend_schema(responses={204: None, **problem(404, "Not configured (not-found).")})
    def delete(self, request, version):
        sso.sso_remove(tenant=self.principal.tenant, actor=self.principal)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- signing in -------------------------------------------------------------------------------


def callback_url(request) -> str:
    return reverse("auth-sso-callback", kwargs={"version": "v1"}, request=request)


class SsoStartView(PublicAPIView):
    """Off to the tenant's identity provider. `redirect_uri` must be one the tenant registered;
    `state` (optional) comes back to it unchanged."""

    @extend_schema(
        parameters=[
            OpenApiParameter("redirect_uri", OpenApiTypes.URI, required=True),
            OpenApiParameter("state", OpenApiTypes.STR, required=False),
        ],
        responses={
            302: OpenApiResponse(description="To the provider's authorization endpoint."),
            **problem(400, "`redirect_uri` is not one the tenant registered (validation-error)."),
            **problem(404, "No such tenant, or no single sign-on (not-found)."),
            **PROVIDER_DOWN,
        },
        auth=[],
    )
    def get(self, request, version, tenant_slug):
        tenant = Tenant.objects.active().filter(slug=tenant_slug).first()
        connection = sso.connection_of(tenant) if tenant is not None else None
        if connection is None:
            raise Problem(ProblemType.NOT_FOUND, detail=NOT_CONFIGURED)
        redirect_uri = request.query_params.get("redirect_uri", "")
        client_state = request.query_params.get("state", "")
        if redirect_uri not in connection.redirect_uris:
            raise InvalidInput(
                {"redirect_uri": ["Must be one of the tenant's single sign-on redirect URIs."]}
            )
        if len(client_state) > MAX_CLIENT_STATE:
            raise InvalidInput(
                {"state": [f"Ensure this field has no more than {MAX_CLIENT_STATE} characters."]},
                code="max_length",
            )
        try:
            started = provider.authorization(
                issuer=connection.issuer,
                client_id=connection.client_id,
                redirect_uri=callback_url(request),
            )
        except (provider.ProviderUnavailable, provider.ProviderMisconfigured) as exc:
            raise sso.unavailable(exc) from exc
        browser_token = secrets.token_urlsafe(32)
        flows.begin(
            flows.Flow(
                tenant_id=str(tenant.pk),
                connection_id=str(connection.pk),
                issuer=connection.issuer,
                client_id=connection.client_id,
                nonce=started.nonce,
                code_verifier=started.code_verifier,
                redirect_uri=redirect_uri,
                client_state=client_state,
                browser_digest=flows.browser_digest(browser_token),
            ),
            state=started.state,
        )
        response = HttpResponseRedirect(started.url)
        response.set_cookie(
            BROWSER_COOKIE,
            browser_token,
            max_age=settings.SSO_FLOW_SECONDS,
            path=_cookie_path(),
            secure=settings.SESSION_COOKIE_SECURE or request.is_secure(),
            httponly=True,
            # Lax: sent on the provider's top-level redirect back to the callback.
            samesite="Lax",
        )
        return response


class SsoCallbackView(PublicAPIView):
    """Back from the provider: the code is exchanged, the ID token verified, the person signed in
    (a member made on a first sign-in), and the browser sent to the tenant's `redirect_uri` with
    a one-time `code` (valid SSO_CODE_SECONDS) and the `state` it began with."""

    @extend_schema(
        parameters=[
            OpenApiParameter("state", OpenApiTypes.STR, required=True),
            OpenApiParameter("code", OpenApiTypes.STR, required=False),
            OpenApiParameter("error", OpenApiTypes.STR, required=False),
        ],
        responses={
            302: OpenApiResponse(description="To the tenant's redirect_uri, with `code`."),
            **SIGN_IN_FAILED,
            **problem(403, "The plan has no room for another member (quota-exceeded)."),
            **PROVIDER_DOWN,
        },
        auth=[],
    )
    def get(self, request, version):
        params = request.query_params
        flow = flows.finish(params.get("state"))
        if flow is None or not flow.binds(request.COOKIES.get(BROWSER_COOKIE)):
            raise Problem(
                ProblemType.SSO_FAILED,
                detail="This sign-in is unknown, expired, already used or began in another "
                "browser: start again.",
            )
        try:
            user, tenant = self.signed_in(flow, params)
        except provider.SignInRejected as exc:
            raise Problem(ProblemType.SSO_FAILED, detail=str(exc)) from exc
        except provider.ProviderUnavailable as exc:
            raise sso.unavailable(exc) from exc
        code = flows.issue_code(user_id=user.pk, tenant_id=tenant.pk)
        response = HttpResponseRedirect(
            _with_query(flow.redirect_uri, code=code, state=flow.client_state or None)
        )
        response.delete_cookie(BROWSER_COOKIE, path=_cookie_path())
        return response

    def signed_in(self, flow: flows.Flow, params):
        if params.get("error"):
            raise provider.SignInRejected(
                f"The identity provider refused the sign-in ({params['error'][:100]})."
            )
        tenant = Tenant.objects.active().filter(pk=flow.tenant_id).first()
        connection = sso.connection_of(tenant) if tenant is not None else None
        if (
            connection is None
            or str(connection.pk) != flow.connection_id
            or (connection.issuer, connection.client_id) != (flow.issuer, flow.client_id)
        ):
            raise provider.SignInRejected(
                "The tenant's single sign-on changed during the sign-in: start again."
            )
        claims = provider.verified_claims(
            issuer=connection.issuer,
            client_id=connection.client_id,
            client_secret=sso.client_secret_of(connection),
            redirect_uri=callback_url(self.request),
            code=params.get("code", ""),
            code_verifier=flow.code_verifier,
            nonce=flow.nonce,
        )
        return sso.sso_sign_in(connection=connection, claims=claims), tenant


class SsoCodeSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=128)


class TokenSsoView(PublicAPIView):
    """The one-time `code` of a single sign-on, for a token pair. Spent on first use."""

    checks_credentials = True
    rate_limit_scope = ratelimit.PublicScope.SIGN_IN

    @extend_schema(
        request=SsoCodeSerializer, responses={200: TokenPairSerializer, **SIGN_IN_FAILED}
    )
    def post(self, request, version):
        serializer = SsoCodeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        redeemed = flows.redeem_code(serializer.validated_data["code"])
        failed = Problem(
            ProblemType.SSO_FAILED,
            detail="This code is unknown, expired or already used: sign in again.",
        )
        if redeemed is None:
            raise failed
        user_id, tenant_id = redeemed
        user = User.objects.filter(pk=user_id, is_active=True).first()
        tenant = Tenant.objects.filter(pk=tenant_id, deleted_at__isnull=True).first()
        if user is None or tenant is None:
            raise failed
        with tenant_context(tenant.pk):
            if not Membership.objects.filter(user=user).exists():
                raise failed
        if not tenant.is_active:
            raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
        return Response(issue_tokens(user=user, tenant=tenant, sso=True))


def _cookie_path() -> str:
    # Sent to the callback only: no other request carries it.
    return reverse("auth-sso-callback", kwargs={"version": "v1"})


def _with_query(url: str, **params: str | None) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += [(name, value) for name, value in params.items() if value is not None]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.rstrip(".").lower() == "localhost"
