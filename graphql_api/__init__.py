"""GraphQL at /graphql/: a second surface over the same kernel, selectors and services as REST.

- `view`: the HTTP endpoint; the credential is checked by the kernel before any GraphQL runs.
- `limits`: depth, cost, aliases, page sizes and document size, refused before execution; the
  cost is also what the request takes from the rate-limit buckets.
- `errors`: the kernel's problems as `errors[].extensions` (`code`, `problem`, `request_id`).
- `relay`: connections that page with REST's keyset cursors.
- `catalog`, `accounts`, `notifications`: the types, queries and mutations of each feature.
- `schema`: all of it assembled; its SDL is committed as `schema.graphql` (docs/graphql.md).
"""
