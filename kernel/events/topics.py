"""The topics events are published under, registered by the app that publishes them.

Each app names its topics in a `StrEnum` and registers it from its `AppConfig.ready()`
(`register(CatalogTopic)`). Whatever subscribes by topic (a webhook endpoint, a member's
notification preferences, a WebSocket's filter) is checked against the registry, so that a
subscription to a topic nothing publishes is refused (400) instead of waiting in silence forever.
A subscription names topics or `fnmatch` patterns of them (`catalog.product.*`, `*`); a pattern is
known when it matches at least one registered topic.
"""

import fnmatch
import re
from collections.abc import Iterable
from enum import StrEnum

# Dotted lower-case words, `*` as a wildcard: what a subscription may name.
TOPIC_PATTERN = re.compile(r"^[a-z0-9_*]+(\.[a-z0-9_*]+)*$")
# The most topics one subscription names.
MAX_TOPICS = 50

_topics: set[str] = set()


def register(topics: type[StrEnum]) -> None:
    """Make every member of `topics` a known topic."""
    for topic in topics:
        if not TOPIC_PATTERN.fullmatch(topic) or "*" in topic:
            raise ValueError(f"{topic!r} is not a topic: dotted lower-case words.")
        _topics.add(str(topic))


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
