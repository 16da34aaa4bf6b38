"""/graphql/ and its SDL."""

from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from graphql_api.schema import schema, sdl
from graphql_api.view import GraphQLView, schema_sdl

urlpatterns = [
    path(
        "graphql/",
        # No cookie authenticates here (only the Authorization header), so there is nothing
        # for a cross-site request to ride on.
        csrf_exempt(GraphQLView.as_view(schema=schema, graphql_ide=None)),
        name="graphql",
    ),
    path("graphql/schema.graphql", schema_sdl, {"sdl": sdl}, name="graphql-schema"),
]
