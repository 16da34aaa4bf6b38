"""Request tracing (to be completed by the request-tracing work).

The request id lives in a context variable so that problem bodies, log lines and Celery task
headers can all read it without passing the request around.
"""

from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def get_request_id() -> str | None:
    return request_id_var.get()


class RequestIdMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self.get_response(request)

    async def __acall__(self, request):
        return await self.get_response(request)
