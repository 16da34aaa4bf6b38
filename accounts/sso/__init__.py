"""Single sign-on with a tenant's own OpenID Connect provider (docs/security.md, "Single
sign-on").

- the models (in accounts/models.py, where Django finds them): the tenant's connection (its
  client secret encrypted with MFA_ENCRYPTION_KEYS) and the links from a provider's subjects to
  people;
- `provider`: the protocol, by authlib, over connections that `kernel.outbound` checks;
- `flows`: what a sign-in keeps between its requests (the `state`, the one-time code);
- `services`: configuring the connection, who a sign-in is, and passwords where it is enforced.
"""
