"""REST's one authentication class: every registered credential type (kernel/credentials.py),
read from the `Authorization` header, with one security scheme per type in the OpenAPI document.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from kernel import credentials


class CredentialAuthentication(BaseAuthentication):
    """`Authorization: <scheme> <credential>`, for any registered scheme. A header naming no
    registered scheme leaves the request anonymous; `request.user` is the person acting, or None
    for a machine (an API key)."""

    def authenticate(self, request):
        found = credentials.from_header(get_authorization_header(request))
        if found is None:
            return None
        credential_type, credential = found
        principal = credential_type.verify(credential)
        credentials.act_for_request(principal)
        credential_type.used(principal)
        return principal.user, principal

    def authenticate_header(self, request) -> str:
        return credentials.challenge()


class CredentialSchemes(OpenApiAuthenticationExtension):
    """Each registered credential type's security scheme; an operation takes any one of them."""

    target_class = CredentialAuthentication

    @property
    def name(self) -> list[str]:
        return [credential_type.openapi_name for credential_type in credentials.registered()]

    def get_security_requirement(self, auto_schema):
        return [{name: []} for name in self.name]

    def get_security_definition(self, auto_schema):
        return [credential_type.openapi_definition for credential_type in credentials.registered()]
