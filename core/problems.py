# PLACEHOLDER: replaced by the problem-details work.
from django.http import JsonResponse
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    return drf_exception_handler(exc, context)


def handler404(request, exception=None):
    return JsonResponse({"status": 404}, status=404)


def handler500(request):
    return JsonResponse({"status": 500}, status=500)
