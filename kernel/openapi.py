"""The OpenAPI side of problem details: the components, and the error responses of each operation.

Every operation gets the `application/problem+json` responses that can happen to it, so that no
view has to declare them. A view that declares one of these statuses itself (with
`extend_schema`) keeps its own.

The schema of a request body also says what its validation refuses that drf-spectacular does
not state by itself (`request_constraints`), so that a client, or a fuzzer, can tell valid input
from invalid by the document alone.
"""

from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from kernel.problems import PROBLEM_CONTENT_TYPE

PROBLEM_REF = "#/components/schemas/Problem"
VALIDATION_PROBLEM_REF = "#/components/schemas/ValidationProblem"

COMPONENTS: dict[str, dict[str, Any]] = {
    "Problem": {
        "type": "object",
        "description": (
            "RFC 9457 problem details: the body of every error response. Branch on `type`; "
            "the problem types are listed in the API's error documentation. More members may "
            "appear for some types."
        ),
        "properties": {
            "type": {
                "type": "string",
                "format": "uri",
                "description": "Identifies the problem type; stable.",
            },
            "title": {"type": "string", "description": "Short summary of the problem type."},
            "status": {"type": "integer", "description": "The HTTP status code."},
            "detail": {"type": "string", "description": "What went wrong this time, for people."},
            "instance": {"type": "string", "description": "The path of the request."},
            "request_id": {
                "type": "string",
                "description": "The request's X-Request-ID; quote it when reporting a problem.",
            },
        },
        "required": ["type", "title", "status", "detail", "instance", "request_id"],
    },
    "ValidationProblem": {
        "description": (
            "A problem that may list what is wrong with the input: `errors` is present when "
            "`type` is validation-error."
        ),
        "allOf": [
            {"$ref": PROBLEM_REF},
            {
                "type": "object",
                "properties": {
                    "errors": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/ProblemFieldError"},
                    }
                },
            },
        ],
    },
    "ProblemFieldError": {
        "type": "object",
        "properties": {
            "field": {
                "type": ["string", "null"],
                "description": (
                    "Dotted path of the field (`attributes.color`, `items.0.name`); null when "
                    "the error is about the request as a whole."
                ),
            },
            "code": {"type": "string", "description": "Machine-readable reason, e.g. required."},
            "message": {"type": "string"},
        },
        "required": ["field", "code", "message"],
    },
}

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="api"'}
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}


# What `str.strip()` removes (`str.isspace()`), which is not quite ECMA's `\s`: DRF's CharField
# strips it before judging a value blank.
PYTHON_WHITESPACE = (
    r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
# No NUL (DRF's CharField refuses it) ...
NO_NUL_PATTERN = r"^[^\u0000]*$"
# ... and, for a field that may not be blank, something besides whitespace.
NOT_BLANK_PATTERN = rf"^[^\u0000]*[^\u0000{PYTHON_WHITESPACE}][^\u0000]*$"
# ... and, for a password, something besides whitespace and digits (Django's
# NumericPasswordValidator refuses a password made of digits only).
NOT_ONLY_DIGITS_PATTERN = rf"^[^\u0000]*[^0-9\u0000{PYTHON_WHITESPACE}][^\u0000]*$"


def request_constraints(field: serializers.Field, schema: dict[str, Any]) -> dict[str, Any]:
    """What the field's validation refuses beyond what drf-spectacular writes down:

    - a list (`ListField`, a many relation) or a dict that may not be empty (`allow_empty=False`)
      has `minItems`/`minProperties` 1;
    - a plain `CharField` refuses NUL characters and, unless it allows blanks, a value that is
      only whitespace (it strips the value first): a `pattern` says so, where the field has no
      pattern, format or enum of its own that says more;
    - a field may add its own, worked out when the document is (from settings, say), with a
      `schema_constraints()` method.
    """
    types = schema.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if getattr(field, "allow_empty", True) is False:
        if "array" in types:
            schema.setdefault("minItems", 1)
        elif "object" in types:
            schema.setdefault("minProperties", 1)
    if (
        isinstance(field, serializers.CharField)
        and type(field).run_validation is serializers.CharField.run_validation
        and type(field).to_internal_value is serializers.CharField.to_internal_value
        and "string" in types
        and not {"pattern", "format", "enum"} & schema.keys()
        # A regex of its own (SlugField, RegexField) says more; drf-spectacular writes it later.
        and not any(isinstance(v, RegexValidator) for v in field.validators)
    ):
        blank_refused = not field.allow_blank and field.trim_whitespace
        if blank_refused:
            schema["pattern"] = NOT_BLANK_PATTERN
        elif not field.allow_blank:
            schema["pattern"] = NO_NUL_PATTERN
    if hasattr(field, "schema_constraints"):
        schema.update(field.schema_constraints())
    return schema


class ProblemAutoSchema(AutoSchema):
    def _map_serializer_field(
        self, field: serializers.Field, direction: str, bypass_extensions: bool = False
    ) -> dict[str, Any] | None:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction != "request" or schema is None or "$ref" in schema:
            return schema
        return request_constraints(field, schema)

    def _get_request_for_media_type(self, serializer: Any, direction: str = "request") -> Any:
        # drf-spectacular makes a PATCH body partial (every field optional), as DRF's
        # partial_update does. A view that validates its PATCH body whole says so on the
        # serializer (`whole_on_patch = True`), and the document keeps its required fields.
        if self.method == "PATCH" and getattr(serializer, "whole_on_patch", False):
            self.method = "PUT"
            try:
                return super()._get_request_for_media_type(serializer, direction)
            finally:
                self.method = "PATCH"
        return super()._get_request_for_media_type(serializer, direction)

    def get_operation(
        self, path: str, path_regex: str, path_prefix: str, method: str, registry: Any
    ) -> dict[str, Any] | None:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        for status, response in self._problem_responses(operation).items():
            responses.setdefault(str(status), response)
        return operation

    def _problem_responses(self, operation: dict[str, Any]) -> dict[int, dict[str, Any]]:
        parameters = operation.get("parameters", [])
        has_body = self.method in _BODY_METHODS
        responses: dict[int, dict[str, Any]] = {}
        if has_body or any(p.get("in") == "query" for p in parameters):
            responses[400] = _response(
                "Invalid input (validation-error, with `errors`) or a malformed request.",
                VALIDATION_PROBLEM_REF,
            )
        if self._needs_credentials():
            responses[401] = _response("Missing or invalid credentials.", headers=_WWW_AUTHENTICATE)
            responses[403] = _response(
                "Permission missing, tenant suspended (tenant-suspended) or plan quota reached "
                "(quota-exceeded)."
            )
        if any(p.get("in") == "path" for p in parameters):
            responses[404] = _response("Not found, including another tenant's resources.")
        if has_body:
            responses[413] = _response("Request body too large.")
            responses[415] = _response("Request body is not of a supported media type.")
        responses[429] = _response("Rate limited.", headers=_RETRY_AFTER)
        responses[500] = _response("Unexpected error; the body says only that, with request_id.")
        responses[503] = _response(
            "A dependency (database, cache) is unavailable; retry later (service-unavailable)."
        )
        return responses

    def _needs_credentials(self) -> bool:
        # A view with authenticators refuses a bad credential (401) even where it needs none,
        # and the tenant of a valid one may be suspended (403). A public view that checks a
        # credential in its body (sign-in, refresh, logout) says so with `checks_credentials`.
        if self.view.get_authenticators() or getattr(self.view, "checks_credentials", False):
            return True
        return not all(isinstance(p, AllowAny) for p in self.view.get_permissions())


def add_problem_components(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Postprocessing hook: the components are in every schema, even one with no operation."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(COMPONENTS)
    result["components"]["schemas"] = dict(sorted(schemas.items()))
    return result


def _response(
    description: str, ref: str = PROBLEM_REF, headers: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": ref}}},
    }
    if headers:
        response["headers"] = headers
    return response


def problem(status: int, description: str) -> dict[tuple[int, str], OpenApiResponse]:
    """An `extend_schema(responses=...)` entry for a problem status an operation can return
    beyond those every operation gets (a 409 of its services, say):
    `responses={201: Serializer, **problem(409, "The name is taken.")}`."""
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(
            {"$ref": PROBLEM_REF}, description=description
        )
    }
