"""The pages of the accounts feature that a person opens in a browser: the invitation's link.

`/accept-invitation?token=…` is the link the invitation email carries (INVITATION_ACCEPT_URL's
default). It is a plain server-rendered form, CSRF-protected, with no script and no external
asset, that accepts through the same service as `POST /api/v1/invitations/accept/`, held to the
same limits per address.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods
from rest_framework.exceptions import APIException

from accounts import services
from kernel import ratelimit
from kernel.problems import Problem, problem_for_exception

TEMPLATE = "accounts/accept_invitation.html"


@xframe_options_deny
@csrf_protect
@require_http_methods(["GET", "POST"])
def accept_invitation(request: HttpRequest) -> HttpResponse:
    token = request.POST.get("token") or request.GET.get("token", "")
    if request.method == "GET":
        return render(request, TEMPLATE, {"token": token})
    try:
        ratelimit.limit_public_request(request, scope=ratelimit.PublicScope.OTHER, account=None)
    except Problem as refused:
        return problem_for_exception(request, refused)
    try:
        user, tenant, _tokens = services.invitation_accept(
            token=token,
            password=request.POST.get("password") or None,
            name=request.POST.get("name", "")[:150],
        )
    except APIException as refused:  # the API's refusals (400, 401, 403, 409), in the page's words
        # The form again, with what was wrong, as forms answer (a 200: the error responses of
        # this server are problem documents, for clients, not pages).
        errors = _messages(refused.detail)
        return render(request, TEMPLATE, {"token": token, "errors": errors})
    return render(request, TEMPLATE, {"joined": tenant, "email": user.email})


def _messages(detail) -> list[str]:
    """What a refusal of the service says, as sentences for the page."""
    if isinstance(detail, dict):
        return [str(message) for messages in detail.values() for message in _listed(messages)]
    return [str(message) for message in _listed(detail)]


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]
