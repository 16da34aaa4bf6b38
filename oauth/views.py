"""The pages and endpoints of the authorization server, under /oauth/ and /.well-known/.

django-oauth-toolkit does the protocol. What is ours:

- the sign-in page, held to the API's sign-in rules (the same limits and lockouts per address
  and per account, the same password hashes);
- the consent page: it names the app, the tenant that registered it, the tenant the person
  grants (a select when they belong to several) and each scope in words; *Allow* redirects with
  a code, *Deny* with `error=access_denied`;
- the requests that must never redirect (an unknown client, a redirect URI the app did not
  register, a missing or non-S256 PKCE challenge) get an error page, 400;
- the token endpoint answers the grants the server supports only;
- introspection answers for the asking client's own tokens only;
- both metadata documents list every endpoint.

Every page is server-rendered, without script or external asset, CSRF-protected and never
framed. The protocol's errors keep their own formats (RFC 6749 JSON, the HTML error page):
`keeps_error_format` tells ProblemDetailsMiddleware so.
"""

import base64
import binascii
import functools
import json
import time
import uuid
from urllib.parse import unquote, urlencode

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.functional import cached_property
from django.utils.safestring import mark_safe
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.generic import FormView
from oauth2_provider import views as dot_views
from oauth2_provider.forms import AllowForm
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views.mixins import OAuthLibMixin

from kernel import ratelimit, second_factor
from kernel.context import operator_scope
from kernel.middleware import keeps_error_format
from kernel.problems import InvalidInput, Problem
from kernel.tenancy.selectors import tenants_of_user
from oauth import selectors
from oauth.models import App
from oauth.scopes import all_scopes

ERROR_TEMPLATE = "oauth/error.html"
S256 = "S256"


def error_page(request: HttpRequest, title: str, detail: str, *, status: int = 400) -> HttpResponse:
    return render(request, ERROR_TEMPLATE, {"title": title, "detail": detail}, status=status)


# --- sign-in -----------------------------------------------------------------------------------

# The session's note of a sign-in whose password was right and whose second factor is awaited.
PENDING_SIGN_IN = "oauth_sign_in_pending"


class SignInForm(auth_views.AuthenticationForm):
    error_messages = {
        # One answer for every way a sign-in can be wrong, as the API's 401.
        "invalid_login": "The email or the password is wrong.",
        "inactive": "The email or the password is wrong.",
    }


@method_decorator(xframe_options_deny, name="dispatch")
class SignInView(auth_views.LoginView):
    """A person's sign-in, for the authorization page (`next`). Every attempt is limited per
    address and per account before the password is checked; failures count toward the same
    lockouts as the API's sign-in."""

    template_name = "oauth/sign_in.html"
    form_class = SignInForm
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        account = request.POST.get("username", "").strip().lower() or None
        try:
            ratelimit.limit_public_request(
                request, scope=ratelimit.PublicScope.SIGN_IN, account=account
            )
        except Problem as refused:
            form = self.get_form()
            form.errors.clear()
            response = self.render_to_response(
                self.get_context_data(form=form, refusal=str(refused.detail)),
                status=refused.status_code,
            )
            # Retry-After, as the API's answer carries it.
            for name, value in refused.headers.items():
                response[name] = value
            return response
        self.code_asked = False
        response = super().post(request, *args, **kwargs)
        if request.user.is_authenticated:
            ratelimit.sign_in_succeeded(request, account=account)
        elif not self.code_asked:
            ratelimit.sign_in_failed(request, account=account)
        return response

    def form_valid(self, form):
        user = form.get_user()
        if not second_factor.required(user):
            return super().form_valid(form)
        # The password is right, and the person has a second factor: not signed in until its
        # code is given too (the next page), within MFA_CHALLENGE_SECONDS.
        self.code_asked = True
        self.request.session[PENDING_SIGN_IN] = {
            "user": str(user.pk),
            "backend": user.backend,
            "until": time.time() + settings.MFA_CHALLENGE_SECONDS,
        }
        next_page = self.get_redirect_url()
        query = f"?{urlencode({'next': next_page})}" if next_page else ""
        return redirect(f"{reverse('oauth-sign-in-code')}{query}")


class SignInCodeForm(forms.Form):
    code = forms.CharField(max_length=32, strip=True)


@method_decorator(xframe_options_deny, name="dispatch")
class SignInCodeView(auth_views.RedirectURLMixin, FormView):
    """The second step of a sign-in whose password was right: a code of the person's second
    factor (TOTP or recovery code). Limited and locked out as the password step is, on the same
    account; a wrong code is a failed sign-in."""

    template_name = "oauth/sign_in_code.html"
    form_class = SignInCodeForm

    def dispatch(self, request, *args, **kwargs):
        self.pending_user = _pending_user(request)
        if self.pending_user is None:
            # Nothing pending (or it expired): back to the password.
            next_page = self.get_redirect_url()
            query = f"?{urlencode({'next': next_page})}" if next_page else ""
            return redirect(f"{reverse('oauth-sign-in')}{query}")
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "next": self.get_redirect_url()}

    def post(self, request, *args, **kwargs):
        account = self.pending_user.email
        try:
            ratelimit.limit_public_request(
                request, scope=ratelimit.PublicScope.SIGN_IN, account=account
            )
        except Problem as refused:
            response = self.render_to_response(
                self.get_context_data(form=self.get_form(), refusal=str(refused.detail)),
                status=refused.status_code,
            )
            for name, value in refused.headers.items():
                response[name] = value
            return response
        form = self.get_form()
        if form.is_valid() and second_factor.verify(self.pending_user, form.cleaned_data["code"]):
            pending = request.session.pop(PENDING_SIGN_IN)
            auth_login(request, self.pending_user, backend=pending["backend"])
            ratelimit.sign_in_succeeded(request, account=account)
            return redirect(self.get_success_url())
        ratelimit.sign_in_failed(request, account=account)
        form.add_error(None, "The code is not valid.")
        return self.form_invalid(form)

    def get_default_redirect_url(self):
        return resolve_url(settings.LOGIN_REDIRECT_URL)


@method_decorator(xframe_options_deny, name="dispatch")
class SecondFactorSetupView(auth_views.RedirectURLMixin, FormView):
    """A person signed in on these pages sets up their second factor, which a tenant of theirs
    requires before they may authorize an app there: the secret as a QR code and as text, a first
    code, then the recovery codes (shown once) and the way back to the authorization."""

    template_name = "oauth/second_factor.html"
    form_class = SignInCodeForm

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            query = urlencode({"next": request.get_full_path()})
            return redirect(f"{reverse('oauth-sign-in')}?{query}")
        if second_factor.required(request.user):
            return redirect(self.get_success_url())
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        started = second_factor.begin(self.request.user)
        return {
            **super().get_context_data(**kwargs),
            "next": self.get_redirect_url(),
            "secret": started["secret"],
            # segno's own SVG markup, made from our URL: nothing of a person's input in it.
            "qr_svg": mark_safe(started["qr_svg"]),  # noqa: S308
        }

    def form_valid(self, form):
        try:
            codes = second_factor.confirm(self.request.user, form.cleaned_data["code"])
        except InvalidInput:
            form.add_error(None, "The code is not valid: enter the one your app shows now.")
            return self.form_invalid(form)
        return self.render_to_response({"recovery_codes": codes, "next": self.get_success_url()})

    def get_default_redirect_url(self):
        return resolve_url(settings.LOGIN_REDIRECT_URL)


def _pending_user(request: HttpRequest):
    """The person whose password was right moments ago, while their code is awaited."""
    pending = request.session.get(PENDING_SIGN_IN)
    if not isinstance(pending, dict) or pending.get("until", 0) < time.time():
        request.session.pop(PENDING_SIGN_IN, None)
        return None
    return get_user_model().objects.filter(pk=pending["user"], is_active=True).first()


sign_in = keeps_error_format(SignInView.as_view())
sign_in_code = keeps_error_format(SignInCodeView.as_view())
second_factor_setup = keeps_error_format(SecondFactorSetupView.as_view())
sign_out = auth_views.LogoutView.as_view(next_page="oauth-sign-in")


# --- consent -----------------------------------------------------------------------------------


class ConsentForm(AllowForm):
    """django-oauth-toolkit's form (the request's parameters, hidden), and the tenant."""

    tenant = forms.ChoiceField(label="Tenant", required=False)

    def __init__(self, *args, tenants=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].choices = [(str(tenant.id), tenant.name) for tenant in tenants]

    def clean(self):
        cleaned = super().clean()
        # Denying needs no tenant; allowing does.
        if cleaned.get("allow") and not cleaned.get("tenant"):
            self.add_error("tenant", "Choose the tenant the app may act in.")
        return cleaned


@method_decorator(xframe_options_deny, name="dispatch")
class AuthorizationView(dot_views.AuthorizationView):
    template_name = "oauth/consent.html"
    form_class = ConsentForm

    def dispatch(self, request, *args, **kwargs):
        # What must not redirect is settled first, before the sign-in: there is no point signing
        # in for a request that cannot succeed, and nothing is sent to a URI not registered.
        refusal = self.refusal(request)
        if refusal is not None:
            return refusal
        # Every consent is asked for: a client cannot skip the page.
        if "approval_prompt" in request.GET:
            request.GET = request.GET.copy()
            del request.GET["approval_prompt"]
        return super().dispatch(request, *args, **kwargs)

    def refusal(self, request) -> HttpResponse | None:
        params = request.POST if request.method == "POST" else request.GET
        client_id = params.get("client_id", "")
        app = App.objects.filter(client_id=client_id).first() if client_id else None
        if app is None:
            return error_page(request, "Unknown app", "No app has this client_id.")
        if not app.redirect_uri_allowed(params.get("redirect_uri", "")):
            return error_page(
                request,
                "Redirect URI not registered",
                f"{app.name} did not register this redirect_uri; it must be one of the app's "
                "redirect URIs exactly.",
            )
        if not params.get("code_challenge") or params.get("code_challenge_method") != S256:
            return error_page(
                request,
                "PKCE is required",
                "The request must carry a code_challenge with code_challenge_method=S256 (PKCE, "
                "RFC 7636); plain is not accepted.",
            )
        return None

    @cached_property
    def person_tenants(self) -> list:
        return tenants_of_user(user_id=self.request.user.pk)

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "tenants": self.person_tenants}

    def get_initial(self):
        initial = super().get_initial()
        # The app's own tenant by default, when the person belongs to it.
        app = App.objects.filter(client_id=initial.get("client_id")).first()
        tenant_ids = {tenant.id for tenant in self.person_tenants}
        if app is not None and app.tenant_id in tenant_ids:
            initial["tenant"] = str(app.tenant_id)
        return initial

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        described = all_scopes()
        context["scope_words"] = [
            (scope, described.get(scope, scope)) for scope in context.get("scopes", [])
        ]
        application = context.get("application")
        if application is not None:
            context["app_tenant"] = application.tenant
        context["no_tenant"] = not self.person_tenants
        requiring = [tenant.name for tenant in self.person_tenants if tenant.require_mfa]
        if requiring and not second_factor.required(self.request.user):
            context["tenants_requiring_a_second_factor"] = requiring
        return context

    def form_valid(self, form):
        self.chosen_tenant_id = form.cleaned_data.get("tenant") or None
        try:
            return super().form_valid(form)
        except InvalidInput as refused:
            # The service's own check of the tenant (the select already offers the person's
            # only): the page again, with what it said, and no code.
            for message in refused.detail.get("tenant", []):
                form.add_error("tenant", str(message))
            return self.form_invalid(form)

    def create_authorization_response(self, request, scopes, credentials, allow):
        # The tenant chosen on the page travels with the request to the code (oauth/validator.py).
        chosen = getattr(self, "chosen_tenant_id", None)
        if chosen is not None:
            credentials = {**credentials, "tenant_id": uuid.UUID(chosen)}
        return super().create_authorization_response(request, scopes, credentials, allow)

    def error_response(self, error, application, **kwargs):
        # The protocol's decision (redirect or not) is django-oauth-toolkit's; the page is ours.
        redirect, error_response = OAuthLibMixin.error_response(self, error, **kwargs)
        if redirect:
            return self.redirect(error_response["url"], application)
        oauth_error = error_response["error"]
        return error_page(
            self.request,
            "This request cannot be authorized",
            oauth_error.description or oauth_error.error,
            status=oauth_error.status_code,
        )


authorize = keeps_error_format(AuthorizationView.as_view())


# --- the protocol's endpoints ------------------------------------------------------------------


class TokenView(dot_views.TokenView):
    """The token endpoint, for the grants the server supports only (OAUTH2_GRANT_TYPES_SUPPORTED).
    oauthlib's password grant checks the person's password before it checks that the client may
    use the grant: reached, it would tell any app a right password from a wrong one, outside the
    sign-in's limits and lockouts."""

    def post(self, request, *args, **kwargs):
        if request.POST.get("grant_type") not in oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED:
            response = JsonResponse({"error": "unsupported_grant_type"}, status=400)
            response["Cache-Control"] = "no-store"
            return response
        return super().post(request, *args, **kwargs)


class IntrospectTokenView(dot_views.IntrospectTokenView):
    """RFC 7662, for the asking client's own tokens: another app's token is `active: false`,
    as an unknown one is, so that no client learns of another's tokens; nor of the person's email
    address through its own."""

    def get(self, request, *args, **kwargs):
        # RFC 7662 is a POST: a token in a query string ends up in logs.
        response = JsonResponse(
            {"error": "invalid_request", "error_description": "Introspection is a POST."},
            status=405,
        )
        response["Allow"] = "POST"
        return response

    def post(self, request, *args, **kwargs):
        return self._own(request, request.POST.get("token"))

    def unauthenticated_response(self, request, oauthlib_request=None):
        # RFC 7662 2.3: a client that does not authenticate is answered as the token endpoint
        # answers it (RFC 6749 5.2), not with django-oauth-toolkit's bare 403.
        response = JsonResponse({"error": "invalid_client"}, status=401)
        response["WWW-Authenticate"] = 'Basic realm="oauth"'
        return response

    def _own(self, request, token: str | None):
        if token is not None:
            client_id = _client_id(request)
            app = selectors.app_of_access_token(token)
            if app is None or app.client_id != client_id:
                return JsonResponse({"active": False})
        response = self.get_token_response(token)
        answer = json.loads(response.content)
        # django-oauth-toolkit adds `username`, the person's email address: an app learns it with
        # the `email` scope only (the ID token, userinfo), never through introspection.
        if answer.pop("username", None) is not None:
            response.content = json.dumps(answer)
        return response


def _client_id(request: HttpRequest) -> str | None:
    """The client the request authenticated as (django-oauth-toolkit checked its secret), from
    HTTP Basic or the body."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return unquote(decoded.partition(":")[0])
    return request.POST.get("client_id")


class ListsEveryEndpoint:
    """Both metadata documents list every endpoint (docs/oauth.md): django-oauth-toolkit's
    OpenID Connect document leaves out revocation and introspection, and its RFC 8414 one the
    userinfo endpoint. Each names the endpoints in `added` too, by their route names."""

    added: dict[str, str] = {}

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        data = json.loads(response.content)
        for field, view_name in self.added.items():
            data.setdefault(field, self._get_endpoint_url(request, view_name, required=True))
        response.content = json.dumps(data)
        return response


class ConnectDiscoveryInfoView(ListsEveryEndpoint, dot_views.ConnectDiscoveryInfoView):
    added = {"revocation_endpoint": "revoke-token", "introspection_endpoint": "introspect"}


class OAuthServerMetadataView(ListsEveryEndpoint, dot_views.OAuthServerMetadataView):
    added = {"userinfo_endpoint": "user-info"}


def in_operator_scope(view):
    """The endpoints that learn the tenant from the code or token they are given: their reads
    (and django-oauth-toolkit's deletes, which reach our tenant-owned rows) span tenants until
    then; every row they write names its tenant explicitly (oauth/services.py)."""

    @functools.wraps(view)
    def scoped(request, *args, **kwargs):
        with operator_scope("the OAuth protocol: a code or token names its tenant"):
            return view(request, *args, **kwargs)

    return scoped


token = keeps_error_format(in_operator_scope(TokenView.as_view()))
revoke = keeps_error_format(in_operator_scope(dot_views.RevokeTokenView.as_view()))
introspect = keeps_error_format(in_operator_scope(IntrospectTokenView.as_view()))
userinfo = keeps_error_format(in_operator_scope(dot_views.UserInfoView.as_view()))
jwks = keeps_error_format(dot_views.JwksInfoView.as_view())
openid_configuration = keeps_error_format(ConnectDiscoveryInfoView.as_view())
server_metadata = keeps_error_format(OAuthServerMetadataView.as_view())
