"""PostgreSQL read replicas: safe reads go to a streaming replica, everything else to the primary.

With `DATABASE_REPLICA_URLS` set (config/settings/base.py makes an alias `replica0`, `replica1`…
of each, through the same backend: the same restricted role and row-level security as the
primary), `ReplicaRoutingMiddleware` decides once per request where its reads go:

- a **safe request** of the REST API (GET, HEAD) reads from a healthy replica, unless the same
  credential wrote less than `READ_YOUR_WRITES_SECONDS` ago: a write marks the credential in
  Redis (so that the mark holds across processes and servers), and its next reads go to the
  primary, which has the write;
- **anything else** (a write, and the reads of the request that writes) uses the primary only.

A view that learns only from what a request says whether it writes (GraphQL, whose queries and
mutations are both POSTs) chooses for itself, by the same rules: `replica_for(request)` for a
request that only reads, which it declares with `reads_only(request)` so that its credential is
not marked, and `answer_with_fallback()` to answer again from the primary if the replica fails.

A replica is **healthy** when it answers and its replay is less than `REPLICA_MAX_LAG_SECONDS`
behind what it has received (`now() - pg_last_xact_replay_timestamp()` while replay trails
receipt; 0 when it has replayed everything). Each process checks each replica at most every
`REPLICA_CHECK_SECONDS`; a replica that fails a check or a query is skipped until its next check
says otherwise. Skips are counted (`tenantapi_db_replica_skipped_total{alias, reason}`), the lag
measured (`tenantapi_db_replica_lag_seconds`), and `/readyz` reports each replica without
failing on it: the primary serves alone.

`DatabaseRouter` is the Django database router that reads the request's choice: writes (and
`select_for_update()`, which Django routes as a write) always go to the primary; migrations run
on the primary only. A request whose replica fails mid-way is answered again from the primary
(kernel/api/base.py, `answer_with_fallback()`), so a replica going down costs a retry, never an
error. Celery tasks and commands read the primary unless they choose a replica themselves
(`reads_from_replica()`).
"""

import contextlib
import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import structlog
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from prometheus_client import Counter, Gauge

log = structlog.get_logger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PREFIX = "/api/"
_REPLICA_PREFIX = "replica"
_WROTE_KEY = "db:wrote:{}"
# Set on a request that is no safe method but wrote nothing (a GraphQL query sent by POST).
_READS_ONLY_ATTRIBUTE = "_reads_only"

T = TypeVar("T")

SKIPPED = Counter(
    "db_replica_skipped",
    "Reads that would have gone to a replica and went to the primary, by replica and reason.",
    ["alias", "reason"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
LAG = Gauge(
    "db_replica_lag_seconds",
    "How far behind each replica's replay was at this process's last check.",
    ["alias"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
    multiprocess_mode="max",
)
READS = Counter(
    "db_requests_routed",
    "Requests that only read, by where their reads went: a replica or the primary.",
    ["target"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)

# Where the current request's (or task's) reads go; None: the primary.
_read_alias: ContextVar[str | None] = ContextVar("read_alias", default=None)

LAG_SQL = (
    "SELECT pg_is_in_recovery(), CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
    " THEN 0 ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)


def replica_aliases() -> list[str]:
    return [alias for alias in settings.DATABASES if alias.startswith(_REPLICA_PREFIX)]


# --- health --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    checked_at: float = float("-inf")
    healthy: bool = False
    lag: float | None = None
    reason: str = "unchecked"


_states: dict[str, _State] = {}
_lock = threading.Lock()


def _check(alias: str) -> _State:
    """Ask the replica how far behind it is; a replica that does not answer is down."""
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute(LAG_SQL)
            in_recovery, lag = cursor.fetchone()
    except DatabaseError as error:
        connections[alias].close()
        log.warning("db_replica_down", alias=alias, error=type(error).__name__)
        return _State(time.monotonic(), False, None, "down")
    lag = float(lag)
    LAG.labels(alias).set(lag)
    if not in_recovery:
        # Promoted, or not a replica at all: still the same data, as fresh as the primary's.
        return _State(time.monotonic(), True, 0.0, "")
    if lag > settings.REPLICA_MAX_LAG_SECONDS:
        return _State(time.monotonic(), False, lag, "lagging")
    return _State(time.monotonic(), True, lag, "")


def state(alias: str) -> _State:
    """The replica's state as this process last saw it, checked again if that is too old."""
    with _lock:
        current = _states.get(alias)
        if current is None or time.monotonic() - current.checked_at >= (
            settings.REPLICA_CHECK_SECONDS
        ):
            current = _states[alias] = _check(alias)
        return current


def mark_down(alias: str) -> None:
    """A query on the replica failed: skip it until its next check."""
    with _lock:
        _states[alias] = _State(time.monotonic(), False, None, "down")
    connections[alias].close()


def healthy_replica() -> str | None:
    """A replica to read from, or None (the primary) when none is healthy. Several replicas
    share the reads: each request tries them from a different one."""
    aliases = replica_aliases()
    if not aliases:
        return None
    start = next(_turn) % len(aliases)
    for alias in aliases[start:] + aliases[:start]:
        current = state(alias)
        if current.healthy:
            return alias
        SKIPPED.labels(alias, current.reason).inc()
    return None


# Which replica a request tries first (itertools.count's next() is atomic under the GIL).
_turn = itertools.count()


def report() -> str:
    """Each replica's state, for /readyz: `replica0 ok (lag 0.0 s), replica1 down`. Raises
    when one is not healthy, so that the check shows as such; /readyz never fails on it."""
    parts, unhealthy = [], False
    for alias in replica_aliases():
        current = state(alias)
        if current.healthy:
            parts.append(f"{alias} ok (lag {current.lag:.1f} s)")
        else:
            unhealthy = True
            lag = f" ({current.lag:.1f} s behind)" if current.lag is not None else ""
            parts.append(f"{alias} {current.reason}{lag}")
    text = ", ".join(parts)
    if unhealthy:
        raise ReplicaUnavailable(text)
    return text


class ReplicaUnavailable(Exception):
    """A replica is down or lagging (for /readyz's report)."""


class ReplicaFailed(Exception):
    """A request reading from a replica met a database error: it is answered again from the
    primary (kernel/api/base.py)."""


# --- read-your-writes ----------------------------------------------------------------------------


def credential_key(request) -> str | None:
    """Who is asking, as far as the read-your-writes mark goes: a digest of the credential the
    request carries (never the credential itself), or None for a request without one."""
    credential = request.META.get("HTTP_AUTHORIZATION") or request.COOKIES.get(
        settings.SESSION_COOKIE_NAME
    )
    if not credential:
        return None
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).hexdigest()[:32]


# The mark lives in the cache without a tenant namespace: it is set after the request, and read
# before it is authenticated (REST) or after (GraphQL), with or without a tenant in context.
_MARKS = "platform"


def wrote_recently(key: str) -> bool:
    from django.core.cache import caches

    try:
        return caches[_MARKS].get(_WROTE_KEY.format(key)) is not None
    except Exception:
        # Without Redis nobody can say: read the primary, which is always right.
        return True


def mark_wrote(key: str) -> None:
    from django.core.cache import caches

    with contextlib.suppress(Exception):
        caches[_MARKS].set(_WROTE_KEY.format(key), 1, timeout=settings.READ_YOUR_WRITES_SECONDS)


def reads_only(request) -> None:
    """Declare that `request`, though no safe method, writes nothing (a GraphQL query sent by
    POST): its credential is not marked as one that wrote, so its next reads may go to a
    replica."""
    setattr(request, _READS_ONLY_ATTRIBUTE, True)


# --- routing -------------------------------------------------------------------------------------


def read_alias() -> str:
    return _read_alias.get() or DEFAULT_DB_ALIAS


@contextlib.contextmanager
def reads_from(alias: str | None) -> Iterator[None]:
    token = _read_alias.set(alias)
    try:
        yield
    finally:
        _read_alias.reset(token)


def replica_for(request) -> str | None:
    """Where a request that only reads should read: a healthy replica, or None (the primary)
    when there is none or the request's credential wrote less than READ_YOUR_WRITES_SECONDS
    ago."""
    if not replica_aliases():
        return None
    key = credential_key(request)
    alias = None if key is not None and wrote_recently(key) else healthy_replica()
    READS.labels("replica" if alias else "primary").inc()
    return alias


def answer_with_fallback(alias: str | None, answer: Callable[[], T]) -> T:
    """`answer()` with its reads on `alias` (None: the primary). When the replica fails under it
    (a database error, or `ReplicaFailed`), the replica is skipped until its next check and
    `answer()` runs again on the primary: a replica going down costs a retry, never an error.
    `answer` opens its transaction on `read_alias()`, so that the retry's is the primary's."""
    if alias is None or alias == DEFAULT_DB_ALIAS:
        with reads_from(None):
            return answer()
    try:
        with reads_from(alias):
            return answer()
    except (ReplicaFailed, DatabaseError) as failure:
        mark_down(alias)
        log.warning("db_replica_failed_request", alias=alias, error=type(failure).__name__)
    with reads_from(None):
        return answer()


@contextlib.contextmanager
def reads_from_replica() -> Iterator[str | None]:
    """Read from a healthy replica in this block, if there is one (a task's long read)."""
    alias = healthy_replica()
    with reads_from(alias):
        yield alias


class ReplicaRoutingMiddleware:
    """Chooses where each request reads from; marks the credentials that write."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        if not replica_aliases():
            return self.get_response(request)
        if request.method not in SAFE_METHODS:
            key = credential_key(request)
            try:
                return self.get_response(request)
            finally:
                if key is not None and not getattr(request, _READS_ONLY_ATTRIBUTE, False):
                    mark_wrote(key)
        if not request.path.startswith(API_PREFIX):
            # The pages read the primary; GraphQL chooses in its view, which alone can tell a
            # query from a mutation (graphql_api/view.py).
            return self.get_response(request)
        with reads_from(replica_for(request)):
            return self.get_response(request)


class DatabaseRouter:
    """Reads where the request (or task) chose; writes and migrations on the primary."""

    def db_for_read(self, model, **hints) -> str | None:
        return _read_alias.get()

    def db_for_write(self, model, **hints) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints) -> bool:
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints) -> bool:
        return db == DEFAULT_DB_ALIAS
