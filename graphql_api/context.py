"""What every resolver finds in `info.context`: the request, the caller, and the one way to check
a permission."""

from dataclasses import dataclass
from typing import Any

from strawberry.django.context import StrawberryDjangoContext
from strawberry.types import Info

from kernel import access
from kernel.principals import Principal


@dataclass
class Context(StrawberryDjangoContext):
    principal: Principal = None  # type: ignore[assignment]
    # What graphql_api/limits.py measured of the document, once it has.
    measure: Any = None


def principal_of(info: Info, permission: str | None = None) -> Principal:
    """The caller, once it is known to hold `permission` (else the FORBIDDEN error that names
    it): the first line of every resolver."""
    principal = info.context.principal
    access.admit_permission(principal, permission)
    return principal


def selects(info: Info, *path: str) -> bool:
    """Whether the query asks for `path` under the field being resolved (`selects(info,
    "edges", "node", "category")`), through fragments too: what a resolver loads for a whole
    page at once, only when it is wanted."""
    # `selected_fields` is the field being resolved itself; the path starts under it.
    level = _fields([child for field in info.selected_fields for child in field.selections])
    for depth, name in enumerate(path):
        matching = [selection for selection in level if selection.name == name]
        if not matching:
            return False
        if depth == len(path) - 1:
            return True
        level = _fields([child for selection in matching for child in selection.selections])
    return False


def _fields(selections: list) -> list:
    """The fields among `selections`, those inside fragments included."""
    found = []
    for selection in selections:
        if hasattr(selection, "name") and hasattr(selection, "arguments"):
            found.append(selection)
        else:
            found.extend(_fields(selection.selections))
    return found
