"""The base of every tenant API view: scoping that a subclass cannot forget.

- The tenant comes from the credential (kernel/credentials.py: an access token or an API key),
  never from the URL or the body.
- Querysets come from the model's tenant-scoped manager, and subclasses cannot override
  `get_queryset`/`get_object` (a class that does is refused when it is defined): they refine the
  scoped queryset in `scope_queryset()`. The rare view that truly needs its own defines
  `dangerously_get_queryset` (or `dangerously_get_object`), which `get_queryset` serves instead
  and which stands out in review.
- Each view declares the permission code each action needs in `required_permissions`;
  an action missing from the map is a configuration error, not an open door.
- The whole request runs in one transaction, so row-level security's tenant setting is applied
  once, and an error response rolls back whatever was written.
- A GET that a cache entry answers may be answered before any of this, by the same checks in
  their fast form (kernel/api/cached_reads.py): a view opts in with `cached_read()`.
- Right after authentication, before the permission checks, the request takes its tokens from
  its tenant's and its credential's rate-limit buckets (kernel/ratelimit/), so that refused
  requests are counted and answered 429 like any other.
"""

from collections.abc import Mapping

import structlog
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, DatabaseError, transaction
from rest_framework import exceptions, permissions, viewsets
from rest_framework.views import APIView

from kernel import access, ratelimit, replicas
from kernel.api import cached_reads
from kernel.api.cached_reads import CachedRead
from kernel.permissions import Perm
from kernel.principals import Principal

log = structlog.get_logger(__name__)

_SEALED = ("get_queryset", "get_object")
# `allowed_methods` per route: (view class, a viewset's actions) -> methods.
_ALLOWED_METHODS: dict[tuple[type, frozenset[str]], tuple[str, ...]] = {}


class IsTenantPrincipal(permissions.BasePermission):
    """Authenticated through a tenant credential (not, say, an operator's admin session)."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Principal)


class IsPerson(permissions.BasePermission):
    """The caller is a person with their own sign-in (an access token): not an API key, nor a
    third-party app acting for a person (an OAuth token). For what only the person has, such as
    a password, their own tenants or the apps they authorized. The others get a 403 problem that
    says so."""

    message = (
        "This endpoint is for people signed in themselves: an API key or a third-party app "
        "cannot use it."
    )

    def has_permission(self, request, view) -> bool:
        principal = request.auth
        return (
            isinstance(principal, Principal)
            and principal.user is not None
            and principal.app is None
        )


class HasRequiredPermission(permissions.BasePermission):
    """The caller holds the permission code the view declares for this action; the 403 says
    which code is missing, in its detail and in `required_permission`."""

    def has_permission(self, request, view) -> bool:
        access.admit_permission(request.auth, required_permission(view, request))
        return True


def required_permission(view, request) -> Perm | None:
    if request.method == "OPTIONS" or request.method not in view.allowed_methods:
        # Nothing to guard: DRF answers an unrouted method with 405 and `Allow`.
        return None
    mapping: Mapping[str, Perm | None] = getattr(view, "required_permissions", None) or {}
    method = "get" if request.method == "HEAD" else request.method.lower()
    key = getattr(view, "action", None) or method
    if key == "metadata":
        # DRF's OPTIONS answer checks the permissions of PUT and POST on the request cloned to
        # each method, while the action stays "metadata": the method's own action decides.
        key = getattr(view, "action_map", {}).get(method, method)
    if key not in mapping:
        raise ImproperlyConfigured(
            f"{type(view).__name__}.required_permissions does not name {key!r}."
        )
    return mapping[key]


def validated_input(view, serializer_class, *, partial: bool = False) -> dict:
    """The request body, validated by `serializer_class`, or the 400 problem naming each field
    that is wrong. Serializers find the request and the caller's tenant in their context."""
    principal = view.request.auth
    serializer = serializer_class(
        data=view.request.data,
        partial=partial,
        context={
            "request": view.request,
            "tenant": principal.tenant if isinstance(principal, Principal) else None,
        },
    )
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class TenantScopedMixin:
    permission_classes = [IsTenantPrincipal, HasRequiredPermission]
    required_permissions: Mapping[str, Perm | None] = {}
    # Limited in perform_authentication instead: DRF's throttles would run after the permissions.
    throttle_classes: list = []
    # What a person held to setting up a second factor may still use (kernel.access): their
    # own account and the second factor's endpoints. Everything else answers 403.
    allowed_before_second_factor = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__:  # the bases below define them, once
            return
        for name in _SEALED:
            if name in cls.__dict__:
                raise TypeError(
                    f"{cls.__name__} overrides {name}(): refine scope_queryset() instead, or "
                    f"name it dangerously_{name} if it must bypass tenant scoping."
                )

    @property
    def allowed_methods(self) -> tuple[str, ...]:
        """The methods the route has handlers for. Django and DRF look for every method's handler
        on each request (the permission check and the `Allow` header each do); they only change
        with the view class and, for a viewset, the route's actions."""
        route = (type(self), frozenset(getattr(self, "action_map", None) or ()))
        methods = _ALLOWED_METHODS.get(route)
        if methods is None:
            methods = _ALLOWED_METHODS[route] = tuple(super().allowed_methods)
        return methods

    def cached_read(self, request) -> CachedRead | None:
        """The cache entry that would answer this GET, for views that can name it up front."""
        return None

    def dispatch(self, request, *args, **kwargs):
        alias = replicas.read_alias()
        if alias == DEFAULT_DB_ALIAS:
            return self._dispatch(request, alias, *args, **kwargs)
        try:
            return self._dispatch(request, alias, *args, **kwargs)
        except (replicas.ReplicaFailed, DatabaseError) as failure:
            # The replica went away under this safe request: answer it again from the primary.
            replicas.mark_down(alias)
            log.warning("db_replica_failed_request", alias=alias, error=type(failure).__name__)
            with replicas.reads_from(None):
                return self._dispatch(request, DEFAULT_DB_ALIAS, *args, **kwargs)

    def _dispatch(self, request, alias: str, *args, **kwargs):
        if request.method == "GET":
            response = self._answer_from_cache(request)
            if response is not None:
                return response
        # The request's one transaction, on the database its reads go to: a safe request routed
        # to a replica reads there in one read-only transaction (kernel/replicas.py).
        with transaction.atomic(using=alias):
            response = super().dispatch(request, *args, **kwargs)
            if response.status_code >= 400:
                transaction.set_rollback(True, using=alias)
            return response

    def handle_exception(self, exc):
        if isinstance(exc, DatabaseError) and replicas.read_alias() != DEFAULT_DB_ALIAS:
            raise replicas.ReplicaFailed() from exc
        return super().handle_exception(exc)

    def _answer_from_cache(self, request):
        if hasattr(self, "action_map"):  # a viewset: its action, as DRF would name it
            self.action = self.action_map.get("get")
        read = self.cached_read(request)
        if read is None:
            return None
        permission = required_permission(self, request)
        if permission is None:
            return None
        response = cached_reads.answer(request, read, permission=permission)
        if response is None:
            return None
        # The headers DRF adds to every response of the view (Allow, Vary).
        self.headers = self.default_response_headers
        return self.finalize_response(request, response)

    def perform_authentication(self, request) -> None:
        try:
            super().perform_authentication(request)
        except exceptions.APIException:
            # A refused credential still costs its address a token.
            ratelimit.limit_anonymous_request(request)
            raise
        ratelimit.limit_api_request(request)
        if isinstance(request.auth, Principal) and not self.allowed_before_second_factor:
            access.admit_second_factor(request.auth)

    @property
    def principal(self) -> Principal:
        return self.request.auth


class TenantAPIView(TenantScopedMixin, APIView):
    pass


class TenantViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    model = None
    lookup_value_converter = "uuid"

    def get_queryset(self):
        try:
            return self.dangerously_get_queryset()
        except NotImplementedError:
            pass
        if self.model is None:
            raise ImproperlyConfigured(f"{type(self).__name__} must set `model`.")
        # The manager filters to the tenant in context; the extra filter on the principal's
        # tenant is a second, explicit lock on the same door.
        queryset = self.model.objects.filter(tenant_id=self.principal.tenant.id)
        return self.scope_queryset(queryset)

    def scope_queryset(self, queryset):
        return queryset

    def dangerously_get_queryset(self):
        """The escape hatch: a view that cannot express its rows as a refinement of its model's
        scoped queryset (`scope_queryset`) returns its own here, and `get_queryset` serves it as
        it is, without the base's filter on the principal's tenant.

        Named so that it stands out in review. What it cannot bypass: the scoped managers
        still fail closed outside a tenant, and row-level security still shows only the
        request's tenant's rows (kernel/tenancy/rls.py).
        """
        raise NotImplementedError

    def get_object(self):
        try:
            return self.dangerously_get_object()
        except NotImplementedError:
            return super().get_object()

    def dangerously_get_object(self):
        """The escape hatch of `get_object`, as `dangerously_get_queryset` is of `get_queryset`."""
        raise NotImplementedError
