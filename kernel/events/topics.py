"""The topics events are published under, registered by the app that publishes them.

Each app names its topics in a `StrEnum` and registers it from its `AppConfig.ready()`
(`register(CatalogTopic)`). Whatever subscribes by topic (a webhook endpoint, a member's
notification preferences, a WebSocket's filter) is checked against the registry, so that a
subscription to a topic nothing publishes is refused (400) instead of waiting in silence forever.
A subscription names topics or `fnmatch` patterns of them (`catalog.product.*`, `*`); a pattern is
known when it matches at least one registered topic.

A topic may need a permission to be read (`catalog.*` needs `catalog.read`): an event carries
the data of its domain, so whoever receives it, as a notification, through a webhook they set up,
or in a delivery listing, must be allowed to read that domain's data through the API too.

A topic may be for machines only (`audit.event`, the audit log's stream: one per change, of
every change): it is sent to webhooks and never made a notification.
"""

import fnmatch
import re
from collections.abc import Collection, Iterable
from enum import StrEnum

# Dotted lower-case words, `*` as a wildcard: what a subscription may name.
TOPIC_PATTERN = re.compile(r"^[a-z0-9_*]+(\.[a-z0-9_*]+)*$")
# The most topics one subscription names.
MAX_TOPICS = 50

_topics: set[str] = set()
# The permission each topic needs to be read, if any.
_read_permissions: dict[str, str] = {}
# The topics no notification is made of.
_not_notified: set[str] = set()


def register(
    topics: type[StrEnum], *, read_permission: str | None = None, notified: bool = True
) -> None:
    """Make every member of `topics` a known topic, readable by holders of `read_permission`,
    and made a notification for people unless `notified` is false."""
    for topic in topics:
        if not TOPIC_PATTERN.fullmatch(topic) or "*" in topic:
            raise ValueError(f"{topic!r} is not a topic: dotted lower-case words.")
        _topics.add(str(topic))
        if read_permission is not None:
            _read_permissions[str(topic)] = read_permission
        if not notified:
            _not_notified.add(str(topic))


def notified(topic: str) -> bool:
    """Whether events of `topic` become notifications (the webhooks take every topic)."""
    return topic not in _not_notified


def readable(topic: str, permissions: Collection[str]) -> bool:
    """Whether holders of `permissions` may receive events of `topic`."""
    needed = _read_permissions.get(topic)
    return needed is None or needed in permissions


def unreadable(permissions: Collection[str]) -> list[str]:
    """The registered topics that holders of `permissions` may not receive, sorted."""
    return sorted(topic for topic in _topics if not readable(topic, permissions))


def read_permissions_missing(patterns: Iterable[str], permissions: Collection[str]) -> list[str]:
    """The permissions, sorted, that the topics these patterns match need and that are not
    among `permissions`."""
    return sorted(
        {
            _read_permissions[topic]
            for topic in _topics
            if topic in _read_permissions
            and _read_permissions[topic] not in permissions
            and any(fnmatch.fnmatchcase(topic, pattern) for pattern in patterns)
        }
    )


def known() -> frozenset[str]:
    return frozenset(_topics)


def unknown(patterns: Iterable[str]) -> list[str]:
    """The patterns (in order, once each) that match no registered topic."""
    return [
        pattern
        for pattern in dict.fromkeys(patterns)
        if not any(fnmatch.fnmatchcase(topic, pattern) for topic in _topics)
    ]


def unknown_topics_detail(patterns: Iterable[str]) -> str | None:
    """The sentence a 400 gives for the patterns that match no topic, or None if all do."""
    missing = unknown(patterns)
    if not missing:
        return None
    names = ", ".join(repr(pattern) for pattern in missing)
    return f"No event has the topic {names}; the topics are: {', '.join(sorted(_topics))}."
