"""What webhooks contributes to the data rights: to a tenant's archive (kernel/exports/), its
endpoints as the API shows them, never their signing secrets (deliveries are not exported: they
are copies of events the archive holds otherwise, kept a short while for retries); to a
person's erasure (kernel/erasure.py), the payloads still stored that name them pseudonymised
(what was delivered is the receivers')."""

from collections.abc import Iterator

from kernel.erasure import ErasedPerson
from webhooks.models import WebhookDelivery, WebhookEndpoint


def webhook_rows() -> Iterator[dict]:
    fields = ("id", "url", "topics", "is_active", "created_at", "updated_at")
    return WebhookEndpoint.objects.order_by("created_at", "id").values(*fields).iterator(2000)


def erase_person(person: ErasedPerson) -> None:
    for term in {person.email, str(person.user_id), person.name.strip()} - {""}:
        mentioning = WebhookDelivery.objects.filter(payload__icontains=term)
        for delivery_id, payload in mentioning.values_list("id", "payload").iterator(500):
            WebhookDelivery.objects.filter(id=delivery_id).update(
                payload=person.scrub_text(payload)
            )
