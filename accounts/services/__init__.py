"""Writes of the accounts feature, one module per seam; every public name is re-exported here.

- `users`: sign-up, passwords, sessions, operators' changes to users and groups;
- `api_keys`: a tenant's API keys;
- `roles`, `members`, `invitations`: a tenant's roles, members and invitations, held to the
  grant rules of `grants`.
"""

from accounts.services.api_keys import *  # noqa: F403
from accounts.services.grants import *  # noqa: F403
from accounts.services.invitations import *  # noqa: F403
from accounts.services.members import *  # noqa: F403
from accounts.services.roles import *  # noqa: F403
from accounts.services.users import *  # noqa: F403
