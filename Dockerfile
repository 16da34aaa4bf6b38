# One image for every process: the REST API (gunicorn, WSGI), WebSockets (uvicorn, ASGI),
# the Celery worker and Celery beat. docker-compose.yml picks the command.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production

WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.9
COPY requirements/base.txt requirements/base.txt
RUN uv pip install --system --no-cache --require-hashes -r requirements/base.txt

COPY . .
# The static files collected into the image, for a proxy in front of it to serve (or SERVE_STATIC).
RUN SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost python manage.py collectstatic --no-input -v 0
RUN useradd --system --uid 10001 --home /app app && mkdir -p /app/var/exports && chown app /app/var /app/var/exports
USER app

EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--config", "config/gunicorn.conf.py", \
     "--bind", "0.0.0.0:8000", "--workers", "4", "--forwarded-allow-ips", "*"]
