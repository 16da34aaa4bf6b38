"""Products and categories for operators, across tenants, filterable by tenant.

Every admin view runs in operator scope (kernel/admin_site.py). Saves and deletes do not write
rows themselves: they enter the object's own tenant and call the services, exactly as the API
does, so that caches are invalidated, versions bumped and events published on this path too.
Forms offer only the object's own tenant's categories, and check SKU and slug uniqueness and
the tree within that tenant, so that operators see field errors rather than a conflict page.

There is no "add": a row belongs to a tenant, which only its own members (the API, the import)
choose by acting in it.
"""

from django import forms
from django.contrib import admin

from catalog import services
from catalog.models import Category, Product
from catalog.selectors import category_ancestor_ids
from kernel.context import tenant_context

# The forms name no model fields themselves: the admin builds the real form class per request,
# in operator scope, which is when a tenant-owned foreign key's choices can be queried at all.


class ProductAdminForm(forms.ModelForm):
    def clean_sku(self) -> str:
        sku = self.cleaned_data["sku"]
        taken = (
            Product.objects.filter(tenant_id=self.instance.tenant_id, sku=sku)
            .exclude(pk=self.instance.pk)
            .exists()
        )
        if taken:
            raise forms.ValidationError("Another product of this tenant has this SKU.")
        return sku


class CategoryAdminForm(forms.ModelForm):
    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        taken = (
            Category.objects.filter(tenant_id=self.instance.tenant_id, slug=slug)
            .exclude(pk=self.instance.pk)
            .exists()
        )
        if taken:
            raise forms.ValidationError("Another category of this tenant has this slug.")
        return slug

    def clean_parent(self) -> Category | None:
        parent = self.cleaned_data["parent"]
        if parent is not None:
            with tenant_context(self.instance.tenant_id):
                ancestors = category_ancestor_ids(category_id=parent.pk)
            if self.instance.pk in ancestors:
                raise forms.ValidationError(
                    "A category cannot be moved below itself or one of its subcategories."
                )
        return parent


class TenantCatalogAdmin(admin.ModelAdmin):
    related_in_tenant: tuple[str, ...] = ()

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        # In operator scope every tenant's categories would be offered: only the object's own.
        for name in self.related_in_tenant:
            field = form.base_fields.get(name)
            if field is not None and obj is not None:
                queryset = Category.objects.filter(tenant_id=obj.tenant_id)
                if isinstance(obj, Category):
                    queryset = queryset.exclude(pk=obj.pk)
                field.queryset = queryset
        return form

    def delete_queryset(self, request, queryset) -> None:
        # One by one through the service: each deletion invalidates and is announced.
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(Product)
class ProductAdmin(TenantCatalogAdmin):
    form = ProductAdminForm
    related_in_tenant = ("category",)
    list_display = [
        "sku",
        "name",
        "tenant",
        "price",
        "currency",
        "stock",
        "is_active",
        "updated_at",
    ]
    list_filter = ["tenant", "is_active"]
    search_fields = ["sku", "name", "tenant__slug"]
    list_select_related = ["tenant"]
    fields = [
        "id",
        "tenant",
        "sku",
        "name",
        "description",
        "price",
        "currency",
        "stock",
        "is_active",
        "category",
        "tags",
        "attributes",
        "version",
        "created_at",
        "updated_at",
    ]
    readonly_fields = ["id", "tenant", "version", "created_at", "updated_at"]

    def save_model(self, request, obj: Product, form, change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in form.changed_data}
        with tenant_context(obj.tenant_id):
            current = Product.objects.get(pk=obj.pk)
            updated = services.product_update(
                tenant=obj.tenant, actor=request.user, product=current, data=data
            )
        obj.version, obj.updated_at = updated.version, updated.updated_at

    def delete_model(self, request, obj: Product) -> None:
        with tenant_context(obj.tenant_id):
            services.product_delete(tenant=obj.tenant, actor=request.user, product=obj)


@admin.register(Category)
class CategoryAdmin(TenantCatalogAdmin):
    form = CategoryAdminForm
    related_in_tenant = ("parent",)
    list_display = ["name", "slug", "tenant", "parent", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "slug", "tenant__slug"]
    list_select_related = ["tenant", "parent"]
    fields = ["id", "tenant", "name", "slug", "parent", "created_at", "updated_at"]
    readonly_fields = ["id", "tenant", "created_at", "updated_at"]

    def save_model(self, request, obj: Category, form, change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in form.changed_data}
        with tenant_context(obj.tenant_id):
            current = Category.objects.get(pk=obj.pk)
            updated = services.category_update(
                tenant=obj.tenant, actor=request.user, category=current, data=data
            )
        obj.version, obj.updated_at = updated.version, updated.updated_at

    def delete_model(self, request, obj: Category) -> None:
        with tenant_context(obj.tenant_id):
            services.category_delete(tenant=obj.tenant, actor=request.user, category=obj)
