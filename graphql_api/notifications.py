"""The caller's notifications over GraphQL: REST's fields (camelCase), its filters, its order
(newest first), and its rules: only ever the caller's own, in the caller's tenant, without the
topics the caller may no longer read, and none for an API key (it has no inbox).

A page costs one query: a notification refers to nothing it would have to load.
"""

import datetime
import uuid

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from graphql_api.context import principal_of
from graphql_api.relay import DEFAULT_PAGE_SIZE, Connection, connection
from kernel.events import topics
from kernel.permissions import Perm
from kernel.principals import Principal
from kernel.problems import Problem, ProblemType
from notifications import selectors, services
from notifications.api.notifications import NotificationFilterSerializer


@strawberry.type(description="A notification of the caller's.")
class Notification:
    id: uuid.UUID
    topic: str
    data: JSON
    created_at: datetime.datetime
    read_at: datetime.datetime | None = strawberry.field(
        description="When it was marked read; null while unread."
    )


@strawberry.type
class NotificationsQuery:
    @strawberry.field(
        description="The caller's notifications, newest first, as REST's list: `unread: true` "
        "for the unread ones only, `topic` for one topic. Needs notifications.read; a person's "
        "only."
    )
    def notifications(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        unread: bool | None = None,
        topic: str | None = None,
    ) -> Connection[Notification]:
        principal = _person(info)
        # REST's validation of its query parameters (a blank or too long topic is refused).
        given = {"unread": unread, "topic": topic}
        filters = NotificationFilterSerializer(
            data={name: value for name, value in given.items() if value is not None}
        )
        filters.is_valid(raise_exception=True)
        queryset = selectors.notification_list(
            user_id=principal.user.id,
            hidden_topics=_hidden_topics(principal),
            **filters.validated_data,
        )
        return connection(queryset, first=first, after=after)


@strawberry.type
class NotificationsMutation:
    @strawberry.mutation(
        description="Mark one of the caller's notifications read (it stays read if it was). "
        "Another's, or one of a topic the caller may no longer read, is NOT_FOUND. Needs "
        "notifications.read."
    )
    def notification_mark_read(self, info: Info, id: uuid.UUID) -> Notification | None:
        principal = _person(info)
        notification = selectors.notification_get(user_id=principal.user.id, notification_id=id)
        # As REST's detail routes: a hidden topic's notification is not there for the caller.
        if notification is None or notification.topic in _hidden_topics(principal):
            raise Problem(ProblemType.NOT_FOUND, detail=f'Notification "{id}" was not found.')
        return services.notification_mark_read(notification=notification)


def _person(info: Info) -> Principal:
    """The caller, holding notifications.read and being a person (REST's `PersonOnly`)."""
    principal = principal_of(info, Perm.NOTIFICATIONS_READ)
    if principal.user is None:
        raise Problem(ProblemType.PERMISSION_DENIED, detail="Notifications are for people.")
    return principal


def _hidden_topics(principal: Principal) -> list[str]:
    # An event carries its domain's data: a member who may not read the catalog (any more)
    # does not see its catalog notifications either.
    return topics.unreadable(principal.permissions)


__all__ = ["NotificationsMutation", "NotificationsQuery"]
