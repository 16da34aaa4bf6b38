"""Third-party apps: the OAuth 2.0 and OpenID Connect provider (docs/oauth.md).

django-oauth-toolkit is the authorization server; this feature adds what makes it ours: apps that
belong to a tenant, tokens bound to one (user, tenant), a consent that names the tenant, and the
credential type through which every surface accepts an OAuth access token.
"""
