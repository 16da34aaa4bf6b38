"""Structured logging: one JSON object a line, every line carrying the bound request context.

Our own lines (structlog) and every library's (stdlib logging: Django, Celery, uvicorn, gunicorn)
go through the same ProcessorFormatter: the same context (request id, tenant, user, task), the
same secret redaction and the same renderer. Libraries' loggers are made to propagate to the root
handler instead of keeping their own text handlers.
"""

import logging

import structlog

from kernel.logging import redact_secrets
from kernel.tracing import add_tenant_id, add_trace_ids

SHARED_PROCESSORS = [
    structlog.contextvars.merge_contextvars,
    add_tenant_id,
    # The trace and span ids, sampled or not (kernel/tracing.py).
    add_trace_ids,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

# Loggers of the servers we run under, sent to our handler. Their access loggers stay quiet:
# RequestIdMiddleware writes the access line, with the request id and without the query string.
_SERVER_LOGGERS = {
    "uvicorn": {"handlers": [], "propagate": True},
    "uvicorn.error": {"handlers": [], "propagate": True},
    "uvicorn.access": {"handlers": [], "propagate": True, "level": "WARNING"},
    "gunicorn.error": {"handlers": [], "propagate": True},
    "gunicorn.access": {"handlers": [], "propagate": True, "level": "WARNING"},
}


def build_logging(*, level: str, fmt: str) -> dict:
    """Configure structlog and return the matching stdlib logging dict (Django's LOGGING).

    gunicorn's master process uses it too (config/gunicorn.conf.py), before Django is loaded.
    """
    # Python warnings become log lines too, instead of text on stderr. Celery does the same, but
    # only after its start-up checks have warned.
    logging.captureWarnings(True)
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            # First: a line below the level costs a comparison, not the whole chain (timestamp,
            # context, ids) before the standard library drops it.
            structlog.stdlib.filter_by_level,
            *SHARED_PROCESSORS,
            # log.info("%s failed", name) works as with the standard library.
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    # Last before rendering: it must see exception text and every library's
                    # message as they would be written.
                    redact_secrets,
                    renderer,
                ],
                # No ExtraAdder: Django puts the whole request object in `extra`.
                "foreign_pre_chain": SHARED_PROCESSORS,
            }
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "structured"},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's own request logger would repeat, as text, what our access log says.
            "django.request": {"level": "ERROR", "propagate": True},
            "django.server": {"level": "WARNING", "propagate": True},
            # Its DEBUG lines carry every query's parameters: user data and credentials.
            "django.db.backends": {"level": "WARNING", "propagate": True},
            **_SERVER_LOGGERS,
        },
    }
