"""Views and a middleware that fail on purpose, for tests/kernel/test_problems.py.

Used as a URLconf (`@pytest.mark.urls("tests.kernel.error_views")`): the real URLs and error
handlers plus these views under /api/v1/test/.
"""

from asgiref.sync import iscoroutinefunction
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path, re_path
from django.utils.decorators import sync_and_async_middleware
from django.views.decorators.http import require_POST
from rest_framework import exceptions, serializers
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from config.urls import handler404, handler500
from config.urls import urlpatterns as config_urlpatterns
from kernel.problems import Problem, ProblemType

# Text that must never reach a client: it stands for a password, a setting or SQL in an exception.
SECRET = "hunter2-in-SELECT-password-FROM-secrets"
EXPLODING_PATH = "/api/v1/test/middleware-explodes/"


class AttributesSerializer(serializers.Serializer):
    color = serializers.ChoiceField(choices=["red", "green"])


class ItemSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=10)


class ThingSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    attributes = AttributesSerializer()
    items = ItemSerializer(many=True)
    tags = serializers.ListField(child=serializers.CharField(max_length=5), required=False)

    def validate(self, attrs: dict) -> dict:
        if attrs["name"] == "reserved":
            raise serializers.ValidationError("This name is reserved.", code="reserved")
        return attrs


class ThingsView(GenericAPIView):
    """POST only, JSON only, open to all: the target of the request-body tests."""

    serializer_class = ThingSerializer
    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request: Request, version: str) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(serializer.data, status=201)


class ExpiredTokenAuthentication(BaseAuthentication):
    """Fails the way simplejwt does: with a dict detail that names token internals."""

    def authenticate(self, request: Request) -> None:
        raise exceptions.AuthenticationFailed(
            {
                "detail": "Token is expired.",
                "code": "token_not_valid",
                "messages": [{"token_class": "AccessToken", "token_type": "access"}],
            }
        )


class ThingDetailView(GenericAPIView):
    serializer_class = ThingSerializer
    # Sends no WWW-Authenticate challenge, so DRF alone would turn its 401s into 403s.
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request, version: str, thing_id: str) -> Response:
        return Response({})


class ExpiredTokenView(APIView):
    authentication_classes = [ExpiredTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Request, version: str) -> Response:
        return Response({})


class OwnersOnly(BasePermission):
    message = "Only owners may do this."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return False


class ForbiddenView(APIView):
    authentication_classes = []
    permission_classes = [OwnersOnly]

    def get(self, request: Request, version: str) -> Response:
        return Response({})


class SuspendedView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request, version: str) -> Response:
        raise Problem(
            ProblemType.TENANT_SUSPENDED,
            detail="This tenant is suspended.",
            extra={"tenant": "acme"},
        )


class AlwaysThrottled(BaseThrottle):
    def allow_request(self, request: Request, view: APIView) -> bool:
        return False

    def wait(self) -> float:
        return 41.2


class ThrottledView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [AlwaysThrottled]

    def get(self, request: Request, version: str) -> Response:
        return Response({})


class CrashingApiView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request, version: str) -> Response:
        raise RuntimeError(SECRET)


class VersionedView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request: Request, version: str) -> Response:
        return Response({"version": request.version})


def crashing_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(SECRET)


async def crashing_async_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(SECRET)


def missing_view(request: HttpRequest) -> HttpResponse:
    raise Http404(SECRET)


def conflicting_view(request: HttpRequest) -> HttpResponse:
    raise Problem(ProblemType.CONFLICT, detail="A product with this SKU exists.")


def body_reading_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(len(request.body)))


@require_POST
def post_only_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("posted")


@sync_and_async_middleware
def exploding_middleware(get_response):
    """Raises outside any view, in whichever mode the stack runs, on one path only."""
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            if request.path == EXPLODING_PATH:
                raise RuntimeError(SECRET)
            return await get_response(request)

    else:

        def middleware(request: HttpRequest) -> HttpResponse:
            if request.path == EXPLODING_PATH:
                raise RuntimeError(SECRET)
            return get_response(request)

    return middleware


# The operations tests/kernel/test_problems.py checks the generated schema of.
schema_urlpatterns = [
    re_path(r"^api/(?P<version>v1)/test/things/$", ThingsView.as_view()),
    re_path(
        r"^api/(?P<version>v1)/test/things/(?P<thing_id>[0-9a-f-]+)/$", ThingDetailView.as_view()
    ),
]

urlpatterns = [
    *config_urlpatterns,
    *schema_urlpatterns,
    re_path(r"^api/(?P<version>v1)/test/expired-token/$", ExpiredTokenView.as_view()),
    re_path(r"^api/(?P<version>v1)/test/forbidden/$", ForbiddenView.as_view()),
    re_path(r"^api/(?P<version>v1)/test/suspended/$", SuspendedView.as_view()),
    re_path(r"^api/(?P<version>v1)/test/throttled/$", ThrottledView.as_view()),
    re_path(r"^api/(?P<version>v1)/test/crash-api/$", CrashingApiView.as_view()),
    # Any version reaches the view here, so that DRF's versioning is what refuses v2.
    re_path(r"^api/(?P<version>v[0-9]+)/test/versioned/$", VersionedView.as_view()),
    path("api/v1/test/crash/", crashing_view),
    path("api/v1/test/crash-async/", crashing_async_view),
    path("api/v1/test/missing/", missing_view),
    path("api/v1/test/conflict/", conflicting_view),
    path("api/v1/test/read-body/", body_reading_view),
    path("api/v1/test/post-only/", post_only_view),
    path("api/v1/test/middleware-explodes/", post_only_view),
]

__all__ = ["handler404", "handler500", "urlpatterns"]
