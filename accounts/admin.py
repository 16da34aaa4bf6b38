"""Users and API keys in the operators' admin.

A user signs in with an email address: there is no username. Every change to a user (the
form, the password form, deleting) goes through `accounts.services`, which records it in the
platform's audit log, and in the tenants of the person where it concerns them (a deactivation
ends their sessions there at once). API keys are read-only (their
secret is nowhere to be seen, not even hashed); an operator can revoke them, through the same
service as the API, which records the revocation with the operator as the actor.

Two actions answer a person's data rights when they write to us rather than use the API: erasing
them (`accounts.erasure.erasure_request` with the operator named: deactivated at once, erased by
a job) and exporting their data (`kernel.exports.services.personal_export_start_for`: a job
whose link the job admin shows). Each asks for confirmation first, like Django's delete, and is
recorded in the platform's audit log with the operator as the actor. Erasing takes the
permission to delete users; exporting, the permission to change them (the export holds more
than the admin shows of a person).
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm, AdminUserCreationForm
from django.contrib.auth.forms import UserChangeForm as DjangoUserChangeForm
from django.contrib.auth.models import Group
from django.db import transaction
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from rest_framework_simplejwt.token_blacklist.admin import BlacklistedTokenAdmin
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from accounts import services
from accounts.erasure import erasure_request
from accounts.models import ApiKey
from accounts.tenant_admin import ReadOnlyAdminMixin
from kernel.exports.services import personal_export_start_for
from kernel.problems import Problem

User = get_user_model()


class UserCreationForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("email", "name")

    def clean_email(self) -> str:
        # Stored lower-cased; compare that way, so that a duplicate is a form error, not a 500.
        email = User.objects.normalize_email(self.cleaned_data["email"])
        if User.objects.filter(email=email).exists():
            raise forms.ValidationError("A user with this email exists.")
        return email


class UserChangeForm(DjangoUserChangeForm):
    class Meta(DjangoUserChangeForm.Meta):
        model = User
        fields = "__all__"


class PasswordChangeForm(AdminPasswordChangeForm):
    def save(self, commit=True):
        # The new password (or none) through the service that records it, never its value.
        user = self.set_password_and_save(self.user, commit=False)
        if commit:
            services.user_operator_save(user=user)
        return user


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = PasswordChangeForm
    ordering = ["email"]
    list_display = ["email", "name", "is_staff", "is_superuser", "is_active", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["email", "name"]
    readonly_fields = ["last_login", "date_joined"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("name",)}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "name", "usable_password", "password1", "password2"),
            },
        ),
    )

    actions = ["erase_people", "export_people_data"]

    def save_model(self, request, obj, form, change):
        # Groups and permissions with the user, so that the service records them in the same
        # event; the form's own save of them, in save_related, then finds nothing to change.
        services.user_operator_save(
            user=obj,
            groups=form.cleaned_data.get("groups"),
            user_permissions=form.cleaned_data.get("user_permissions"),
        )

    def delete_model(self, request, obj):
        services.user_delete(user=obj)

    def delete_queryset(self, request, queryset):
        # The bulk action too: one service call, and so its events, per user.
        for user in queryset:
            services.user_delete(user=user)

    def user_change_password(self, request, id, form_url=""):
        # Django's view is not atomic: the password, its events and the admin's own log entry
        # commit together.
        with transaction.atomic():
            return super().user_change_password(request, id, form_url)

    @admin.action(description="Erase the selected people", permissions=["delete"])
    def erase_people(self, request, queryset):
        if not request.POST.get("post"):
            return self.data_rights_confirmation(
                request,
                queryset,
                action="erase_people",
                title="Erase the selected people",
                explanation=(
                    "Each person is deactivated now: every session, token and socket of theirs "
                    "ends. A job then erases them: their memberships end, what each feature holds "
                    "of them is removed, and their account and every audit event naming them "
                    "keep a pseudonym instead. This cannot be undone."
                ),
            )
        erased = []
        for user in queryset.order_by("email"):
            if user.pk == request.user.pk or user.is_staff:
                refusal = (
                    "you cannot erase yourself here"
                    if user.pk == request.user.pk
                    else "a staff member is not erased here: take away their staff status first"
                )
                self.message_user(request, f"{user.email}: {refusal}.", messages.ERROR)
                continue
            if user.erasure_requested_at is not None or user.erased_at is not None:
                self.message_user(
                    request, f"{user.email}: erasure already asked for.", messages.WARNING
                )
                continue
            try:
                erasure_request(user=user, operator=request.user)
            except Problem as refused:
                self.message_user(request, f"{user.email}: {refused.detail}", messages.ERROR)
                continue
            erased.append(user.email)
        if erased:
            self.message_user(
                request,
                f"Deactivated now, and erased by a job in a moment: {', '.join(erased)}.",
                messages.SUCCESS,
            )

    @admin.action(description="Export the selected people's data", permissions=["change"])
    def export_people_data(self, request, queryset):
        if not request.POST.get("post"):
            return self.data_rights_confirmation(
                request,
                queryset,
                action="export_people_data",
                title="Export the selected people's data",
                explanation=(
                    "A job exports each person's own data from every tenant they belong to, as "
                    "they would themselves. The job is theirs too, in the tenant they joined "
                    "first; once it has succeeded, its page here has the archive's download "
                    "link, valid for a limited time."
                ),
            )
        for user in queryset.order_by("email"):
            try:
                job = personal_export_start_for(user=user, operator=request.user)
            except Problem as refused:
                self.message_user(request, f"{user.email}: {refused.detail}", messages.ERROR)
                continue
            self.message_user(
                request,
                format_html(
                    '{}: export started, <a href="{}">job {}</a> (its download link once it '
                    "has succeeded).",
                    user.email,
                    reverse("admin:core_job_change", args=[job.pk]),
                    job.pk,
                ),
                messages.SUCCESS,
            )

    def data_rights_confirmation(self, request, queryset, *, action, title, explanation):
        """The page that lists the selected people and asks to confirm, as Django's delete
        does; its form posts the action again with `post`."""
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "explanation": explanation,
            "people": list(queryset.order_by("email")),
            "action": action,
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/accounts/user/data_rights_confirmation.html", context
        )


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin):
    def save_model(self, request, obj, form, change):
        # The permissions with the group, so that the service records them in the same event;
        # the form's own save of them, in save_related, then finds nothing to change.
        services.group_operator_save(group=obj, permissions=form.cleaned_data.get("permissions"))

    def delete_model(self, request, obj):
        services.group_delete(group=obj)

    def delete_queryset(self, request, queryset):
        # The bulk action too: one service call, and so one event, per group.
        for group in queryset:
            services.group_delete(group=group)


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "prefix",
        "tenant",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["tenant"]
    search_fields = ["name", "prefix", "tenant__slug"]
    list_select_related = ["tenant"]
    # The hash is of no use to anyone reading, and is a secret's stand-in: leave it out.
    exclude = ["key_hash"]
    actions = ["revoke"]

    @admin.action(description="Revoke")
    def revoke(self, request, queryset):
        revoked = 0
        for api_key in queryset.select_related("tenant").filter(revoked_at__isnull=True):
            services.api_key_revoke(tenant=api_key.tenant, api_key=api_key)
            revoked += 1
        self.message_user(request, f"{revoked} API key(s) revoked.", messages.SUCCESS)


class BlacklistedTokenAdminWithoutAdd(BlacklistedTokenAdmin):
    """Refresh tokens are blacklisted by logouts and rotations, never by hand: no "Add"."""

    def has_add_permission(self, request) -> bool:
        return False


admin.site.unregister(BlacklistedToken)
admin.site.register(BlacklistedToken, BlacklistedTokenAdminWithoutAdd)
