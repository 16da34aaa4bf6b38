"""The second factor: TOTP (RFC 6238, as authenticator apps compute it) with ten single-use
recovery codes, on django-otp's device framework (docs/security.md, "Account security").

- the models (in accounts/models.py, where Django finds them): a person's TOTP device, its
  secret encrypted at rest, and their recovery codes, stored as password hashes, never as text;
- `secrets`: the encryption of device secrets with MFA_ENCRYPTION_KEYS, newest first;
- `services`: enrolment, confirmation, removal, recovery codes, and checking a code;
- `challenges`: the short-lived, single-use `mfa_token` of a sign-in waiting for its code.
"""
