"""OpenAPI descriptions of our authentication classes (drf-spectacular extensions).

Imported from TenantsConfig.ready(): an extension takes effect once its class is defined.
"""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TenantJWTScheme(SimpleJWTScheme):
    target_class = "kernel.authentication.TenantJWTAuthentication"
    name = "bearerAuth"


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key sk_live_…`: an API key of the tenant (docs/api-keys.md).",
        }
