"""Leases: a process's share of a principal's buckets, for cached reads.

A cached hit (kernel/api/cached_reads.py) is otherwise answered from the process's memory; a
round trip to take its one token would cost more than the rest of it. So a process takes its
tokens in leases: a few at a time from the shared buckets, in one script call, spent one per
request for at most RATELIMIT_LEASE_SECONDS, their unspent rest given back with the next call.

What that changes, and what it does not: no more requests than the limit are ever admitted
(every token is taken from the shared buckets before it is spent); a lease is at most
1/LEASE_SHARE of what the emptiest bucket holds, so as a bucket runs low leases shrink to one
token and the count is exact where it matters. But a process may hold, for up to a lease's
lifetime, tokens that another process is refused for; and a leased answer's RateLimit-Remaining
is what the buckets held at the lease plus the tokens the process has not spent: an estimate
that other processes' requests since then do not lower.
"""

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from prometheus_client import Counter

from kernel.ratelimit.backend import backend
from kernel.ratelimit.buckets import TokenBucket, principal_buckets
from kernel.ratelimit.checks import bucket_quotas, seconds, unchecked
from kernel.ratelimit.decisions import UNCHECKED_DECISION, Decision, Quota, attach
from kernel.ratelimit.scripts import LEASE

LEASE_SHARE = 8
LEASES_KEPT = 10_000

LEASES = Counter(
    "ratelimit_leases",
    "Rate-limit leases taken by cached reads (one Redis round trip each), by outcome.",
    ["outcome"],
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)


@dataclass(slots=True)
class _Lease:
    buckets: tuple[TokenBucket, ...]
    granted: int
    unspent: int
    # Each bucket's tokens after the lease was taken (they refill from there).
    left: tuple[int, ...]
    taken_at: float
    until: float

    def decision(self, now: float) -> Decision:
        quotas = []
        for bucket, left in zip(self.buckets, self.left, strict=True):
            refilled = (now - self.taken_at) * bucket.per_second
            level = min(bucket.capacity, left + self.unspent + refilled)
            reset = (bucket.capacity - level) / bucket.per_second
            quotas.append(Quota(bucket.capacity, max(int(level), 0), max(math.ceil(reset), 0)))
        return Decision(allowed=True, quotas=tuple(quotas))

    def next_want(self, now: float) -> int:
        """A lease spent before it ran out is doubled; one that ran out is cut to what was spent."""
        if self.unspent == 0 and now < self.until:
            return min(self.granted * 2, settings.RATELIMIT_LEASE_MAX_TOKENS)
        return max(min(self.granted - self.unspent, settings.RATELIMIT_LEASE_MAX_TOKENS), 1)


_leases: dict[tuple[str, ...], _Lease] = {}
_leases_lock = threading.Lock()


def limit_principal_leased(request: Any, principal: Any) -> Decision:
    """The principal's buckets, from this process's lease of their tokens: a round trip only
    when the lease is spent or has run out (the module docstring). For cached reads, which are
    GETs."""
    if not settings.RATELIMIT_ENABLED:
        return UNCHECKED_DECISION
    buckets = principal_buckets(principal)
    keys = tuple(bucket.key for bucket in buckets)
    now = time.monotonic()
    with _leases_lock:
        lease = _leases.get(keys)
        # The same buckets are the same tuple (`_principal_buckets` remembers them): `is` first.
        same = lease is not None and (lease.buckets is buckets or lease.buckets == buckets)
        if same and lease.unspent and now < lease.until:
            lease.unspent -= 1
            decision = lease.decision(now)
            attach(request, decision)
            return decision
        _leases.pop(keys, None)

    give_back, want = (0, 1) if lease is None else (lease.unspent, lease.next_want(now))
    args: list[Any] = [len(buckets), want, give_back, LEASE_SHARE]
    for bucket in buckets:
        args += [bucket.capacity, repr(float(bucket.per_second))]
    reply = backend().run(LEASE, keys, args)
    if reply is None:
        return unchecked(request, fail_closed=False)
    taken, wait_ms, *rest = (int(value) for value in reply)
    LEASES.labels(outcome="taken" if taken else "refused").inc()
    if not taken:
        quotas, refused_by = bucket_quotas(buckets, rest)
        decision = Decision(
            allowed=False,
            retry_after=max(seconds(wait_ms), 1),
            quotas=tuple(quotas),
            refused_by=refused_by,
        )
        attach(request, decision)
        return decision

    lease = _Lease(
        buckets=buckets,
        granted=taken,
        unspent=taken - 1,  # this request's
        left=tuple(rest[0::2]),
        taken_at=now,
        until=now + settings.RATELIMIT_LEASE_SECONDS,
    )
    with _leases_lock:
        if len(_leases) >= LEASES_KEPT:
            _leases.clear()
        _leases[keys] = lease
    decision = lease.decision(now)
    attach(request, decision)
    return decision
