"""The RateLimit-* headers in the OpenAPI document."""

from typing import Any

from kernel.ratelimit.decisions import LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER

_HEADER_COMPONENTS: dict[str, dict[str, Any]] = {
    LIMIT_HEADER: {
        "description": "Requests that may be sent at once: the size of the bucket this response "
        "reports on (the one closest to running out).",
        "schema": {"type": "integer", "minimum": 0},
    },
    REMAINING_HEADER: {
        "description": "Requests left in that bucket now.",
        "schema": {"type": "integer", "minimum": 0},
    },
    RESET_HEADER: {
        "description": "Seconds until that bucket is full again (0 when it is).",
        "schema": {"type": "integer", "minimum": 0},
    },
}


def add_rate_limit_headers(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: every response of every operation states the
    RateLimit-* headers, declared once as components."""
    components = result.setdefault("components", {})
    components.setdefault("headers", {}).update(_HEADER_COMPONENTS)
    refs = {name: {"$ref": f"#/components/headers/{name}"} for name in _HEADER_COMPONENTS}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                if isinstance(response, dict) and "$ref" not in response:
                    # A new dict: operations may share their headers' dict with each other.
                    response["headers"] = {**response.get("headers", {}), **refs}
    return result
