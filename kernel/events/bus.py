"""The in-process side of domain events: the `Event`, who subscribed to which topics, and
running their handlers. Publishing goes through the outbox (kernel/events/outbox.py); the
package's docstring (kernel/events/__init__.py) describes the whole.
"""

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from kernel.principals import Principal

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    topic: str
    data: dict[str, Any]
    tenant_id: str | None
    actor: dict[str, str | None]
    request_id: str | None
    occurred_at: str

    def as_message(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> "Event":
        return cls(**message)


Handler = Callable[[Event], None]
_subscriptions: list[tuple[str, Handler]] = []


def subscribe(topic_pattern: str, handler: Handler) -> None:
    """Call `handler(event)` for every event whose topic matches the pattern (once per pair)."""
    if (topic_pattern, handler) not in _subscriptions:
        _subscriptions.append((topic_pattern, handler))


def unsubscribe(topic_pattern: str, handler: Handler) -> None:
    if (topic_pattern, handler) in _subscriptions:
        _subscriptions.remove((topic_pattern, handler))


def handlers_for(topic: str) -> list[Handler]:
    return [handler for pattern, handler in _subscriptions if fnmatch.fnmatchcase(topic, pattern)]


def dispatch(event: Event) -> int:
    """Call the handlers of `event`; returns how many ran without error.

    One failing handler does not keep the others from their turn: it is logged with its
    traceback and the rest carry on.
    """
    return run_handlers(event)[0]


def run_handlers(event: Event) -> tuple[int, int]:
    """Call the handlers of `event`, as `dispatch()` does; returns (succeeded, failed)."""
    succeeded = failed = 0
    for handler in handlers_for(event.topic):
        try:
            handler(event)
        except Exception:
            log.exception(
                "event_handler_failed",
                topic=event.topic,
                event_id=event.id,
                handler=getattr(handler, "__qualname__", repr(handler)),
            )
            failed += 1
        else:
            succeeded += 1
    return succeeded, failed


def actor_reference(actor: Any) -> dict[str, str | None]:
    """Who acted, as ids: a tenant principal (a person or an API key) or an operator's user."""
    if isinstance(actor, Principal):
        user, api_key = actor.user, actor.api_key
    else:
        user, api_key = actor, None
    return {
        "user_id": str(user.pk) if getattr(user, "pk", None) is not None else None,
        "api_key_id": str(api_key.pk) if getattr(api_key, "pk", None) is not None else None,
    }
