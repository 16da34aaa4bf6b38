"""The isolation and permission matrices, generated from the URL configuration.

Every route under /api/v1/ whose view is built on `TenantScopedMixin` is found by walking the
URLconf, with every method it allows and the permission its view declares for that method's
action. Nothing here lists endpoints: a new one is covered the moment it is routed.

- Isolation: each route and method that takes an object id is called with tenant B's owner
  (who holds every permission) on tenant A's object: a 404 problem, and A's row is unchanged.
- Permissions: each route and method is called by a member whose role holds every permission but
  the one the view declares: a 403 problem.

The one hand-written part is `FACTORIES`, which makes an object of a model in a tenant; a view
over a model that has none fails the matrix loudly instead of going untested.
"""

import datetime
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db.models import Model
from django.urls import URLPattern, URLResolver, get_resolver, include, path, re_path
from django.urls.resolvers import RegexPattern, RoutePattern
from rest_framework.test import APIClient
from rest_framework.views import APIView

from accounts.mfa import secrets as mfa_secrets
from accounts.models import ApiKey, SsoConnection
from catalog.models import Category, Product
from kernel import audit
from kernel.api.base import TenantAPIView, TenantScopedMixin
from kernel.context import tenant_context
from kernel.events import Event
from kernel.models import Job
from kernel.permissions import Perm
from kernel.tenancy.models import AuditEvent, Invitation, Membership, Role
from notifications.models import Notification
from oauth import services as oauth_services
from oauth.models import App, Consent
from tests.catalog_helpers import make_category, make_product
from tests.factories import make_member, make_role, make_tenant
from tests.helpers import API, assert_problem, client_for, outcome, owner_of
from webhooks import services as webhook_services
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

# The prefix the versioned API is mounted under, as the URLconf writes it.
VERSION_PREFIX = re.compile(r"^\^?api/\(\?P<version>v1\)/$")
ROUTE_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
# Literal addresses pass the webhook target check without any DNS lookup.
PUBLIC_WEBHOOK_URL = "https://93.184.215.14/hooks"

# Tenant routes that need no permission code, only membership of the tenant. A new route
# declaring None fails test_unguarded_routes_are_the_known_ones until someone decides it should.
UNGUARDED = {
    ("/api/v1/auth/me/", "get"),
    ("/api/v1/auth/password/change/", "post"),
    ("/api/v1/permissions/", "get"),
    ("/api/v1/tenant/", "get"),
    # A person's own grants to third-party apps: theirs alone, whatever their role.
    ("/api/v1/oauth-grants/", "get"),
    ("/api/v1/oauth-grants/{pk}/", "get"),
    ("/api/v1/oauth-grants/{pk}/", "delete"),
    # A person's own second factor: theirs alone, whatever their role.
    ("/api/v1/auth/mfa/", "get"),
    ("/api/v1/auth/mfa/totp/", "post"),
    ("/api/v1/auth/mfa/totp/", "delete"),
    ("/api/v1/auth/mfa/totp/confirm/", "post"),
    ("/api/v1/auth/mfa/recovery-codes/", "post"),
    # Jobs: which ones a caller sees is decided by each job's kind (kernel/api/jobs.py).
    ("/api/v1/jobs/", "get"),
    ("/api/v1/jobs/{pk}/", "get"),
    # A person's own data, to take away or erase: theirs alone, whatever their role.
    ("/api/v1/auth/me/", "delete"),
    ("/api/v1/auth/me/export/", "post"),
}


@dataclass(frozen=True)
class Route:
    """One route and method of a tenant view, as the URL walk found it."""

    template: str  # "/api/v1/webhooks/{pk}/deliveries/{delivery_id}/redeliver/"
    method: str
    view: type
    action: str | None
    parameters: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.method.upper()} {self.template}"

    @property
    def permission(self) -> Perm | None:
        return self.view.required_permissions[self.action or self.method]


# --- the URL walk ------------------------------------------------------------------------------


def walk_urlconf(patterns, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in patterns:
        piece = _template_piece(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from walk_urlconf(entry.url_patterns, prefix + piece)
        else:
            yield prefix + piece, entry


def _template_piece(pattern) -> str:
    if isinstance(pattern, RoutePattern):
        return ROUTE_PARAMETER.sub(r"{\g<name>}", str(pattern))
    if isinstance(pattern, RegexPattern) and VERSION_PREFIX.match(str(pattern)):
        return "api/v1/"
    # Any other regex is left as written: a tenant route under it is unclassified (below).
    return str(pattern)


def route_methods(callback, view: type) -> dict[str, str | None]:
    """HTTP method -> viewset action (None for a plain APIView), as DRF dispatches them."""
    actions = getattr(callback, "actions", None)
    if actions:
        return dict(actions)
    return {
        method: None
        for method in view.http_method_names
        if method not in ("head", "options") and hasattr(view, method)
    }


def walk_api(urlconf=None) -> tuple[list[Route], list[str], list[str]]:
    """(tenant routes, other API views' templates, problems that make a route unclassifiable)."""
    routes: list[Route] = []
    others: list[str] = []
    unclassified: list[str] = []
    for template, pattern in walk_urlconf(get_resolver(urlconf).url_patterns):
        template = "/" + template
        view = getattr(pattern.callback, "cls", None)
        is_tenant_view = view is not None and issubclass(view, TenantScopedMixin)
        if not is_tenant_view:
            if template.startswith(f"{API}/"):
                others.append(template)
            continue
        # Checked before the prefix: a tenant view routed by a regex of its own must not escape
        # the matrices by not looking like an /api/v1/ path.
        if "(" in template or "^" in template or "$" in template:
            unclassified.append(f"{template}: a regex route the walk cannot fill in")
            continue
        if not template.startswith(f"{API}/"):
            unclassified.append(f"{template}: a tenant view outside {API}/")
            continue
        parameters = tuple(re.findall(r"{(\w+)}", template))
        for method, action in sorted(route_methods(pattern.callback, view).items()):
            key = action or method
            if key not in (getattr(view, "required_permissions", None) or {}):
                unclassified.append(f"{method.upper()} {template}: no permission for {key!r}")
                continue
            routes.append(Route(template, method, view, action, parameters))
    return routes, others, unclassified


ROUTES, OTHER_API_VIEWS, UNCLASSIFIED = walk_api()
OBJECT_ROUTES = [route for route in ROUTES if route.parameters]
GUARDED_ROUTES = [route for route in ROUTES if route.permission is not None]
# Every route that declares a permission is a case of the permission matrix. Those that declare
# none (any member may call them) are not cases: test_unguarded_routes_are_the_known_ones pins
# exactly which they are, so a new unguarded route fails until someone decides.
PERMISSION_CASES = [pytest.param(route, id=route.id) for route in GUARDED_ROUTES]


# --- objects of tenant A -----------------------------------------------------------------------


@dataclass
class Tenancy:
    tenant: Any
    owner: Any
    owner_client: APIClient


def _product(world: Tenancy, parent: Model | None) -> Model:
    return make_product(world.tenant)


def _category(world: Tenancy, parent: Model | None) -> Model:
    return make_category(world.tenant)


def _role(world: Tenancy, parent: Model | None) -> Model:
    return make_role(world.tenant, permissions=[Perm.CATALOG_READ])


def _membership(world: Tenancy, parent: Model | None) -> Model:
    return make_member(world.tenant, roles=("viewer",))


def _created_through_the_api(world: Tenancy, url: str, body: dict, model: type[Model]) -> Model:
    response = world.owner_client.post(f"{API}/{url}", body, format="json")
    assert response.status_code == 201, response.content
    with outcome():
        return model.objects.get(pk=response.json()["id"])


def _invitation(world: Tenancy, parent: Model | None) -> Model:
    with outcome():
        viewer = Role.objects.get(tenant=world.tenant, name="viewer")
    body = {"email": f"invitee-{uuid.uuid4().hex[:8]}@example.com", "roles": [str(viewer.pk)]}
    return _created_through_the_api(world, "invitations/", body, Invitation)


def _api_key(world: Tenancy, parent: Model | None) -> Model:
    body = {"name": "matrix", "permissions": [Perm.CATALOG_READ]}
    return _created_through_the_api(world, "api-keys/", body, ApiKey)


def _audit_event(world: Tenancy, parent: Model | None) -> Model:
    with tenant_context(world.tenant.id):
        return audit.record(
            tenant_id=world.tenant.id, action="tests.matrix.recorded", target_type="matrix"
        )


def _job(world: Tenancy, parent: Model | None) -> Model:
    with tenant_context(world.tenant.id):
        return Job.objects.create(kind="products.import", created_by_user_id=world.owner.pk)


def _notification(world: Tenancy, parent: Model | None) -> Model:
    # The owner's own: so that the control request (A's owner) finds it.
    with tenant_context(world.tenant.id):
        return Notification.objects.create(
            user=world.owner, topic="catalog.product.updated", data={}, event_id=uuid.uuid4().hex
        )


def _webhook_endpoint(world: Tenancy, parent: Model | None) -> Model:
    with tenant_context(world.tenant.id):
        return webhook_services.webhook_endpoint_create(url=PUBLIC_WEBHOOK_URL, topics=["*"])


def _sso_connection(world: Tenancy, parent: Model | None) -> Model:
    # Stored as the service stores one, without asking a provider (its test does:
    # tests/accounts/test_sso.py).
    with tenant_context(world.tenant.id):
        return SsoConnection.objects.create(
            issuer="https://idp.example",
            client_id="matrix",
            encrypted_client_secret=mfa_secrets.encrypt(b"matrix-secret"),
            domains=["example.com"],
            redirect_uris=["https://app.example/sso"],
            default_role=Role.objects.get(name="viewer", is_builtin=True),
        )


def _webhook_delivery(world: Tenancy, parent: Model | None) -> Model:
    endpoint = parent or _webhook_endpoint(world, None)
    event = Event(
        id=uuid.uuid4().hex,
        topic="catalog.product.updated",
        data={"id": str(uuid.uuid4())},
        tenant_id=str(world.tenant.id),
        actor={"user_id": None, "api_key_id": None},
        request_id=None,
        occurred_at=datetime.datetime.now(tz=datetime.UTC).isoformat(),
    )
    with tenant_context(world.tenant.id):
        deliveries = webhook_services.webhook_deliveries_create_for_event(event=event)
    (delivery,) = [d for d in deliveries if d.endpoint_id == endpoint.pk]
    # Given up on, so that the owner's control request may redeliver it.
    with outcome():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status=WebhookDelivery.Status.DEAD)
    return delivery


def _oauth_app(world: Tenancy, parent: Model | None) -> Model:
    body = {
        "name": "matrix",
        "redirect_uris": ["https://app.example/callback"],
        "scopes": [Perm.CATALOG_READ],
    }
    return _created_through_the_api(world, "oauth-apps/", body, App)


def _oauth_grant(world: Tenancy, parent: Model | None) -> Model:
    # The owner's own: so that the control request (A's owner) finds it.
    app = _oauth_app(world, None)
    return oauth_services.consent_record(
        app=app, user=world.owner, tenant_id=world.tenant.id, scopes=[Perm.CATALOG_READ]
    )


FACTORIES: dict[type[Model], Callable[[Tenancy, Model | None], Model]] = {
    Product: _product,
    Category: _category,
    Role: _role,
    Membership: _membership,
    Invitation: _invitation,
    ApiKey: _api_key,
    AuditEvent: _audit_event,
    Job: _job,
    Notification: _notification,
    WebhookEndpoint: _webhook_endpoint,
    WebhookDelivery: _webhook_delivery,
    App: _oauth_app,
    Consent: _oauth_grant,
    SsoConnection: _sso_connection,
}


def parameter_models(route: Route) -> list[tuple[str, type[Model], str]]:
    """(parameter, model, attribute its value is read from) for each id in the route.

    The first id is the view's own object (`model`, looked up by `lookup_field`). A further
    `<thing>_id` is a child of it: the model related to the view's whose name ends in `thing`.
    """
    model = getattr(route.view, "model", None)
    if model is None:
        pytest.fail(f"{route.id}: the view takes an id but names no `model`.")
    first, *children = route.parameters
    found = [(first, model, route.view.lookup_field)]
    for name in children:
        stem = name.removesuffix("_id").replace("_", "")
        related = [
            relation.related_model
            for relation in model._meta.related_objects
            if relation.related_model._meta.model_name.endswith(stem)
        ]
        if len(related) != 1:
            pytest.fail(f"{route.id}: cannot tell which model {name!r} names ({related}).")
        found.append((name, related[0], "pk"))
    return found


def objects_for(route: Route, world: Tenancy) -> tuple[str, list[Model]]:
    """The route's URL filled in with new objects of `world`, and those objects."""
    values: dict[str, str] = {}
    made: list[Model] = []
    for name, model, attribute in parameter_models(route):
        factory = FACTORIES.get(model)
        if factory is None:
            pytest.fail(
                f"{route.id}: no factory for {model.__name__}; add one to FACTORIES so that "
                "the route is part of the matrix."
            )
        obj = factory(world, made[-1] if made else None)
        made.append(obj)
        values[name] = str(getattr(obj, attribute))
    return route.template.format(**values), made


def snapshot(objects: list[Model]) -> list[dict | None]:
    with outcome():
        return [type(obj).objects.filter(pk=obj.pk).values().first() for obj in objects]


def request(client: APIClient, method: str, url: str):
    # An empty JSON object: the lookup must answer before any validation of the body would.
    body = None if method in ("get", "delete") else {}
    return getattr(client, method)(url, body, format="json")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def tenant_a() -> Tenancy:
    tenant = make_tenant(name="Tenant A", plan_code="enterprise")
    owner = owner_of(tenant)
    return Tenancy(tenant, owner, client_for(owner, tenant))


@pytest.fixture
def owner_of_b() -> APIClient:
    tenant = make_tenant(name="Tenant B", plan_code="enterprise")
    return client_for(owner_of(tenant), tenant)


# --- the walk itself ---------------------------------------------------------------------------


def test_every_tenant_route_is_classified():
    assert not UNCLASSIFIED, UNCLASSIFIED
    # A walk that finds nothing would make every matrix below pass vacuously.
    assert len(OBJECT_ROUTES) >= 10
    assert len(GUARDED_ROUTES) >= 20


class _UnclassifiableURLconf:
    """A URLconf with the two mistakes the walk must refuse to pass over."""

    class HalfDeclared(TenantAPIView):
        required_permissions = {"get": Perm.CATALOG_READ}

        def get(self, request, *args, **kwargs): ...

        def post(self, request, *args, **kwargs): ...

    urlpatterns = [
        re_path(r"^api/(?P<version>v1)/", include([path("half/", HalfDeclared.as_view())])),
        re_path(r"^api/(?P<version>v1)/legacy/(?P<pk>[0-9]+)/$", HalfDeclared.as_view()),
    ]


def test_the_walk_reports_what_it_cannot_classify():
    routes, _, unclassified = walk_api(_UnclassifiableURLconf)

    assert [route.id for route in routes] == ["GET /api/v1/half/"]
    assert len(unclassified) == 2
    assert "POST /api/v1/half/: no permission for 'post'" in unclassified


def test_every_other_api_view_is_a_known_public_one():
    """A view under /api/v1/ that is not a tenant view escapes both matrices: only the public
    ones (signing in and up, accepting an invitation, the API's documents) may."""
    public = {
        "/api/v1/schema/",
        "/api/v1/docs/",
        "/api/v1/redoc/",
        "/api/v1/auth/signup/",
        "/api/v1/auth/token/",
        "/api/v1/auth/token/refresh/",
        # The second step of a sign-in: the mfa_token is the credential.
        "/api/v1/auth/token/mfa/",
        # Single sign-on: the browser's way to the tenant's provider and back, and the one-time
        # code it ends with (the code is the credential).
        "/api/v1/auth/sso/{tenant_slug}/start/",
        "/api/v1/auth/sso/callback/",
        "/api/v1/auth/token/sso/",
        "/api/v1/auth/logout/",
        "/api/v1/auth/password/reset/",
        "/api/v1/auth/password/reset/confirm/",
        "/api/v1/invitations/accept/",
        # An export's archive: the signed link is the credential (kernel/exports/services.py).
        "/api/v1/exports/{token}/",
    }
    assert set(OTHER_API_VIEWS) == public


def test_unguarded_routes_are_the_known_ones():
    unguarded = {(route.template, route.method) for route in ROUTES if route.permission is None}
    assert unguarded == UNGUARDED


def test_every_model_of_an_object_route_has_a_factory():
    missing = {
        model.__name__
        for route in OBJECT_ROUTES
        for _, model, _ in parameter_models(route)
        if model not in FACTORIES
    }
    assert not missing


# --- isolation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", OBJECT_ROUTES, ids=lambda route: route.id)
def test_another_tenants_object_is_not_found_and_unchanged(route, tenant_a, owner_of_b):
    # Given an object of tenant A (and its parent, on a nested route)
    url, objects = objects_for(route, tenant_a)
    before = snapshot(objects)

    # When tenant B's owner, who holds every permission, calls the route with A's ids
    response = request(owner_of_b, route.method, url)

    # Then it does not exist for B, and A's rows are as they were
    assert_problem(response, 404, "not-found")
    assert snapshot(objects) == before
    # And the same call from A's owner does reach the object: the 404 was the tenant, not a
    # URL that names nothing.
    assert request(tenant_a.owner_client, route.method, url).status_code != 404


# --- permissions -------------------------------------------------------------------------------


@pytest.mark.parametrize("route", PERMISSION_CASES)
def test_a_role_without_the_declared_permission_is_refused(route, tenant_a):
    # Given a member whose role holds every permission but the one the view declares
    others = [code for code in Perm if code != route.permission]
    role = make_role(tenant_a.tenant, permissions=others)
    member = make_member(tenant_a.tenant, roles=(role.name,))
    client = client_for(member.user, tenant_a.tenant)
    url = objects_for(route, tenant_a)[0] if route.parameters else route.template

    # When they call the route
    response = request(client, route.method, url)

    # Then it is refused for the permission
    assert_problem(response, 403, "permission-denied")


def test_the_views_are_all_drf_views():
    # required_permissions is only read by DRF's permission machinery.
    assert all(issubclass(route.view, APIView) for route in ROUTES)
