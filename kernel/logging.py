"""Log hygiene: no secret ever reaches a log line, and slow SQL is logged with its context.

`redact_secrets` is a structlog processor. config/settings/logging.py runs it on every line, ours
and every library's, after exceptions have been rendered to text and just before the line is
rendered, so that it sees exactly what would be written.

`SlowQueryLog` is a database execute wrapper; `CoreConfig.ready()` installs it on every connection.
"""

import re
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import structlog
from django.conf import settings

REDACTED = "[REDACTED]"

# A key is secret when one of its words is one of these: "password", "refresh_token",
# "X-Api-Key", "clientSecret", "HTTP_AUTHORIZATION", "Set-Cookie"... Over-redacting a harmless
# value costs little; a leaked credential costs a rotation at best.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "access",
        "refresh",
        "authorization",
        "apikey",
        "key",
        "cookie",
        "signature",
        "credential",
        "credentials",
        "jwt",
        "csrftoken",
        "sessionid",
    }
)
# ...unless the key names something about a secret rather than the secret itself: ids and key
# prefixes are how an operator finds which credential was used (api_key_id, key_prefix).
_NON_SECRET_LAST_WORDS = frozenset({"id", "ids", "prefix", "type"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

_CREDENTIAL_CHARS = r"[A-Za-z0-9._~+/=-]"
_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # A whole Authorization value, whatever its scheme ("Authorization: Basic dXNlcjpw...").
    (
        re.compile(
            rf"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:[A-Za-z][\w-]*+\s+)?{_CREDENTIAL_CHARS}+"
        ),
        rf"\1{REDACTED}",
    ),
    # Credentials after their scheme, wherever they are quoted.
    (re.compile(rf"(?i)\b(bearer|api-key)(\s+){_CREDENTIAL_CHARS}+"), rf"\1\2{REDACTED}"),
    # JWTs: three base64url segments, the first a JSON object ("eyJ" is '{"' encoded). The
    # signature may be empty (alg "none"), which is still a token someone tried to use. Starting
    # only where a word starts keeps the scan of a long base64 text linear.
    (re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # Payment and webhook secrets in the formats clients paste around.
    (re.compile(r"(?:sk_(?:live|test)|whsec)_[A-Za-z0-9+/=_-]+"), REDACTED),
]
# key=value and "key": "value" inside text: query strings, reprs of dicts, exception messages.
# Log lines can hold text a client chose, so every part of this is linear in the text's length:
# keys are only tried where a word starts and never re-scanned (possessive), and a quoted value is
# only looked for within 256 characters (a longer one is masked up to its first space).
_SECRET_ASSIGNMENT = re.compile(
    r"""(?ix)
    (?P<key>
        (?<![\w-])
        (?=[\w-]*?(?:password|passwd|secret|token|api[_-]?key|signature|cookie|sessionid))
        [\w-]++
    )
    (?P<sep>["']?\s*[:=]\s*)
    (?:
        (?P<quote>["'])(?:\\.|(?!(?P=quote))[^\\\n]){0,256}(?P=quote)
      | (?!\[REDACTED\])["']?[^\s"'&,;{}()\[\]<>]+
    )
    """
)
# Deeper than this a value is rendered as text and masked as text: logs are not a place for
# deep structures, and a self-referencing one must not recurse forever.
_MAX_DEPTH = 8


def _mask_assignment(match: re.Match[str]) -> str:
    quote = match.group("quote") or ""
    return f"{match.group('key')}{match.group('sep')}{quote}{REDACTED}{quote}"


def mask_secrets(text: str) -> str:
    """The text with every credential-looking value replaced by [REDACTED]."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return _SECRET_ASSIGNMENT.sub(_mask_assignment, text)


@lru_cache(maxsize=2048)
def is_secret_key(key: str) -> bool:
    words = [word.lower() for word in _WORD.findall(key)]
    if not words or words[-1] in _NON_SECRET_LAST_WORDS:
        return False
    return any(word in _SECRET_WORDS for word in words)


def _redact(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return mask_secrets(value)
    if depth >= _MAX_DEPTH:
        return mask_secrets(str(value))
    if isinstance(value, Mapping):
        return {
            key: REDACTED if is_secret_key(str(key)) else _redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(item, depth + 1) for item in value]
    if isinstance(value, bytes):
        return mask_secrets(value.decode("utf-8", errors="replace"))
    # Anything else would be rendered through str() or repr() anyway: mask that text.
    return mask_secrets(str(value))


def redact_secrets(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: secret keys at any depth and secret-looking text become [REDACTED]."""
    return _redact(event_dict, depth=0)


# --- Slow queries ---------------------------------------------------------------------------------

slow_query_logger = structlog.get_logger("tenantapi.db")
_MAX_SQL_CHARS = 4000


class SlowQueryLog:
    """Execute wrapper: one `slow_query` warning for each statement slower than SLOW_QUERY_MS.

    It logs the SQL as Django sends it to the driver, with placeholders, and never the parameters,
    which hold user data and, on the authentication paths, credentials. The request context
    (request id, tenant, user) comes from the bound context variables, as on any other line.
    """

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            if duration_ms >= getattr(settings, "SLOW_QUERY_MS", 100):
                # A statement composed with psycopg's `sql` module (the row-level security DDL)
                # is not a string: its repr names each part.
                text = sql if isinstance(sql, str) else repr(sql)
                slow_query_logger.warning(
                    "slow_query",
                    duration_ms=round(duration_ms, 1),
                    sql=text if len(text) <= _MAX_SQL_CHARS else f"{text[:_MAX_SQL_CHARS]}…",
                    many=many,
                    database=context["connection"].alias,
                )


def install_slow_query_log(sender: Any, connection: Any, **kwargs: Any) -> None:
    """`connection_created` receiver: put SlowQueryLog on the connection, once.

    The signal fires on every (re)connect of the same connection object, hence the check. It goes
    first in the list, not last: `connection.execute_wrapper()` pops the last wrapper when its
    block ends, and a connection opened inside such a block would otherwise lose ours instead.
    """
    if not any(isinstance(wrapper, SlowQueryLog) for wrapper in connection.execute_wrappers):
        connection.execute_wrappers.insert(0, SlowQueryLog())
