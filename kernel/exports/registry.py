"""The resources an export is made of, registered by the features that own them.

A resource is one NDJSON file of the archive: `<name>.ndjson`, one JSON object per line. Its
`rows` function yields plain mappings (ids, text, numbers, booleans, lists, objects, dates and
times), read as the API shows them, never a secret: no key hash, no password hash, no signing
secret, no token. Rows are read from a server-side cursor (`.values(...).iterator(chunk_size=…)`)
so that memory holds a chunk, whatever the tenant's size; the archive writer calls `rows` in a
transaction of its own and in the scope it says.

- A **tenant resource**'s `rows()` yields the tenant in context's rows (row-level security and
  the scoped managers apply as in any request).
- A **personal resource**'s `rows(user_id)` yields what concerns that person: called once per
  tenant they belong to, in that tenant's scope, or, with `per_tenant=False`, once, outside any
  tenant (their account itself).
"""

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]
NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True, slots=True)
class TenantResource:
    name: str
    rows: Callable[[], Iterable[Row]]


@dataclass(frozen=True, slots=True)
class PersonalResource:
    name: str
    rows: Callable[[uuid.UUID], Iterable[Row]]
    per_tenant: bool = True


_tenant: dict[str, TenantResource] = {}
_personal: dict[str, PersonalResource] = {}


def _check_name(name: str, registered: Mapping[str, Any]) -> None:
    if not name or not set(name) <= NAME_CHARACTERS:
        raise ValueError(f"{name!r} is not a resource name: lower-case letters, digits and _.")
    if name in registered:
        raise ValueError(f"The export resource {name!r} is registered twice.")


def register_tenant_resource(name: str, rows: Callable[[], Iterable[Row]]) -> None:
    _check_name(name, _tenant)
    _tenant[name] = TenantResource(name, rows)


def register_personal_resource(
    name: str, rows: Callable[[uuid.UUID], Iterable[Row]], *, per_tenant: bool = True
) -> None:
    _check_name(name, _personal)
    _personal[name] = PersonalResource(name, rows, per_tenant)


def tenant_resources() -> list[TenantResource]:
    return [_tenant[name] for name in sorted(_tenant)]


def personal_resources() -> list[PersonalResource]:
    return [_personal[name] for name in sorted(_personal)]
