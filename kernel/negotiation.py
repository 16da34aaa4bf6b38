"""Content negotiation: DRF's, with two differences.

- DRF answers a format no renderer of the view has with 404, as if the resource did not exist.
  The `format` query parameter is a parameter like any other (the OpenAPI document lists its
  values where a view has several renderers): a value outside them is a 400 naming it. So is
  an empty one (`?format=`), which DRF would take for no parameter at all.
- OPTIONS describes the resource (DRF's metadata), a JSON document whatever `?format=` or
  `Accept` ask for: a renderer for another format (the catalog export's CSV) cannot write it.
"""

from django.http import Http404
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings


class ContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        if request.method == "OPTIONS":
            for renderer in renderers:
                if isinstance(renderer, JSONRenderer):
                    return renderer, renderer.media_type
        parameter = api_settings.URL_FORMAT_OVERRIDE
        if not format_suffix and parameter and request.query_params.get(parameter) == "":
            raise _unknown_format(renderers)
        return super().select_renderer(request, renderers, format_suffix)

    def filter_renderers(self, renderers, format):
        try:
            return super().filter_renderers(renderers, format)
        except Http404:
            raise _unknown_format(renderers) from None


def _unknown_format(renderers) -> ValidationError:
    choices = ", ".join(sorted({renderer.format for renderer in renderers}))
    message = f"Unknown format; use one of: {choices}."
    return ValidationError(
        {api_settings.URL_FORMAT_OVERRIDE: [ErrorDetail(message, code="invalid_choice")]}
    )
