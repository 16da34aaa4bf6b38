"""Webhooks: tenants' HTTP endpoints receive the domain events they subscribe to, signed.

    handlers  a domain event (kernel.events) → a fan-out task per event
    services  endpoints (create, update, delete), the fan-out into delivery rows, redelivery
    delivery  one attempt at one delivery: breaker, SSRF check, signed POST, retry schedule
    breaker   the per-endpoint circuit breaker, kept on the endpoint's row
    signing   secrets and Standard Webhooks signatures
    tasks     the Celery tasks, on the `webhooks` queue

The protocol, the retry schedule and the rules are in docs/webhooks.md.
"""
