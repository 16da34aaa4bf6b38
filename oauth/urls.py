"""The authorization server's routes (docs/oauth.md).

The protocol's endpoints carry django-oauth-toolkit's names in its namespace
(`oauth2_provider:token`, …), mounted at the root: its metadata documents find them by those
names, and it takes the issuer to be where `.well-known/openid-configuration` is.
"""

from django.urls import path

from oauth import views

# Mounted at the root, in the `oauth2_provider` namespace.
protocol = [
    path("oauth/authorize/", views.authorize, name="authorize"),
    path("oauth/token/", views.token, name="token"),
    path("oauth/revoke/", views.revoke, name="revoke-token"),
    path("oauth/introspect/", views.introspect, name="introspect"),
    path("oauth/userinfo/", views.userinfo, name="user-info"),
    path("oauth/jwks/", views.jwks, name="jwks-info"),
    # Where RFC 8414 and OpenID Connect Discovery put them.
    path(
        ".well-known/openid-configuration",
        views.openid_configuration,
        name="oidc-connect-discovery-info",
    ),
    path(
        ".well-known/oauth-authorization-server",
        views.server_metadata,
        name="oauth-server-metadata",
    ),
]

# Mounted at /oauth/.
pages = [
    path("sign-in/", views.sign_in, name="oauth-sign-in"),
    path("sign-in/code/", views.sign_in_code, name="oauth-sign-in-code"),
    path("second-factor/", views.second_factor_setup, name="oauth-second-factor"),
    path("sign-out/", views.sign_out, name="oauth-sign-out"),
]
