# PLACEHOLDER: replaced by the health and metrics work.
from django.http import JsonResponse


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    return JsonResponse({"status": "ok"})


def metrics(request):
    from django_prometheus.exports import ExportToDjangoView

    return ExportToDjangoView(request)
