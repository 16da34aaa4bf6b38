"""Every request starts with no tenant and ends with none, whatever happened in between.

It also opens the request's audit context (tenants/audit.py): where the request comes from, for
the events it records; authentication adds who is acting.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from tenants.audit import request_context
from tenants.context import no_tenant


class TenantScopeMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        with no_tenant(), request_context(request):
            return self.get_response(request)

    async def __acall__(self, request):
        with no_tenant(), request_context(request):
            return await self.get_response(request)
