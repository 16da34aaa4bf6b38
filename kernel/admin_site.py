"""The operators' admin site: every admin view runs in operator scope, set here once.

Operators look across tenants, so each admin request has to see every tenant's rows, through
both the scoped managers and row-level security. Rather than each ModelAdmin remembering it, the
site wraps every view it serves (its own and every registered ModelAdmin's) in
`operator_scope()`, after Django's own check that the user is active staff: anyone else is sent
to the login page before any tenant data is read. The same wrapper names the operator as the
actor of every audit event the view records (kernel/audit.py).

Installed as the default admin site (INSTALLED_APPS names OperatorAdminConfig), so
`admin.site` and `@admin.register` everywhere mean this site. This module must not import
models: it is loaded while the app registry is being populated.
"""

import functools
from functools import update_wrapper

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.urls import path

from kernel.context import operator_scope


class OperatorAdminSite(admin.AdminSite):
    site_header = "Tenant API operations"
    site_title = "Tenant API operations"
    index_title = "Tenants, members and plans"
    # "View site": the API's documentation, what there is to see of the site.
    site_url = "/api/v1/docs/"
    # Django's sign-in page with a field for the code of a second factor.
    login_template = "admin/operator_login.html"

    def admin_view(self, view, cacheable=False):
        def view_in_operator_scope(request, *args, **kwargs):
            # Imported here: this module is loaded before the models are.
            from kernel.audit import Actor, acting_as

            held = self.held_to_enrolment(request)
            if held is not None:
                return held
            with (
                operator_scope("an operator using the Django admin"),
                acting_as(Actor.operator(request.user)),
            ):
                response = view(request, *args, **kwargs)
                # A TemplateResponse renders after the view returns, and the lazy querysets in
                # its context (a changelist's rows) would then run outside the scope.
                if callable(getattr(response, "render", None)) and not response.is_rendered:
                    response.render()
                return response

        update_wrapper(view_in_operator_scope, view)
        # Django's wrapper goes outside: the staff check happens before the scope is entered.
        return super().admin_view(view_in_operator_scope, cacheable)

    def get_urls(self):
        return [
            path(
                "second-factor/",
                self.admin_view(self.second_factor_setup),
                name="second-factor",
            ),
            *super().get_urls(),
        ]

    def held_to_enrolment(self, request):
        """With ADMIN_REQUIRE_MFA, an operator signed in without a second factor is sent to set
        one up (and may sign out); nothing else of the admin answers them until they have."""
        from django.conf import settings
        from django.shortcuts import redirect
        from django.urls import reverse

        from kernel import second_factor

        if not (settings.ADMIN_REQUIRE_MFA and request.user.is_authenticated):
            return None
        setup, logout = reverse("admin:second-factor"), reverse("admin:logout")
        if request.path in (setup, logout) or second_factor.required(request.user):
            return None
        return redirect(setup)

    def second_factor_setup(self, request):
        """An operator's second factor: a new secret (shown as a QR code and as text) and a
        first code to confirm it, then the recovery codes, shown once."""
        from django.shortcuts import redirect
        from django.template.response import TemplateResponse
        from django.utils.safestring import mark_safe

        from kernel import second_factor
        from kernel.problems import InvalidInput

        if second_factor.required(request.user):
            return redirect("admin:index")
        context = {**self.each_context(request), "title": "Set up two-factor authentication"}
        if request.method == "POST":
            try:
                codes = second_factor.confirm(request.user, request.POST.get("code", "").strip())
            except InvalidInput:
                context["error"] = "The code is not valid: enter the one your app shows now."
            else:
                context["recovery_codes"] = codes
                return TemplateResponse(request, "admin/second_factor.html", context)
        started = second_factor.begin(request.user)
        # segno's own SVG markup, made from our URL: nothing of a person's input in it.
        context.update(secret=started["secret"], qr_svg=mark_safe(started["qr_svg"]))  # noqa: S308
        return TemplateResponse(request, "admin/second_factor.html", context)

    def login(self, request, extra_context=None):
        """The operators' sign-in, held to the failure windows of every password check
        (kernel/ratelimit/sign_ins.py): operators see every tenant, so their passwords are worth
        guessing. Past a window's limit the sign-in is refused (429), right password or not."""
        self.login_form = operator_login_form()
        if request.method != "POST":
            return super().login(request, extra_context)
        # Imported here: this module is loaded before the models are.
        from kernel import ratelimit
        from kernel.problems import Problem, problem_for_exception

        account = request.POST.get("username", "")
        try:
            ratelimit.limit_public_request(
                request, scope=ratelimit.PublicScope.SIGN_IN, account=account
            )
        except Problem as refused:
            return problem_for_exception(request, refused)
        response = super().login(request, extra_context)
        if request.user.is_authenticated and response.status_code == 302:
            ratelimit.sign_in_succeeded(request, account=account)
        else:
            ratelimit.sign_in_failed(request, account=account)
        return response


@functools.cache
def operator_login_form():
    """Django's admin sign-in form, which also takes the code of the operator's second factor
    when they have one (kernel/second_factor.py): the password alone signs no such operator in.
    Made on first use: the form's module loads models."""
    from django import forms
    from django.contrib.admin.forms import AdminAuthenticationForm
    from django.core.exceptions import ValidationError

    from kernel import second_factor

    class OperatorAuthenticationForm(AdminAuthenticationForm):
        code = forms.CharField(
            required=False,
            max_length=32,
            label="Code",
            help_text="From your authenticator app, or a recovery code, when your account has "
            "two-factor authentication.",
            widget=forms.TextInput(attrs={"autocomplete": "one-time-code"}),
        )

        def confirm_login_allowed(self, user):
            # Called once the password is right: only then does the page say a code is needed.
            super().confirm_login_allowed(user)
            if second_factor.required(user) and not second_factor.verify(
                user, self.cleaned_data.get("code") or ""
            ):
                raise ValidationError(
                    "Enter the current code of your authenticator app, or a recovery code.",
                    code="second_factor",
                )

    return OperatorAuthenticationForm


class OperatorAdminConfig(AdminConfig):
    default_site = "kernel.admin_site.OperatorAdminSite"
