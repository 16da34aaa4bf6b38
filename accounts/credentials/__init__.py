"""The credentials of the accounts feature, registered with the kernel (kernel/credentials.py):
a person's access token (`Bearer`, access_tokens.py) and a tenant's API key (`Api-Key`,
api_keys.py). The access token comes first: its scheme is the one a 401 names.
"""

from accounts.credentials import access_tokens, api_keys
from kernel import credentials


def register() -> None:
    credentials.register(access_tokens.CREDENTIAL_TYPE)
    credentials.register(api_keys.CREDENTIAL_TYPE)
