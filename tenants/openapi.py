"""OpenAPI descriptions of our authentication classes (drf-spectacular extensions).

Imported from TenantsConfig.ready(): an extension takes effect once its class is defined.
"""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class TenantJWTScheme(SimpleJWTScheme):
    target_class = "tenants.authentication.TenantJWTAuthentication"
    name = "bearerAuth"
