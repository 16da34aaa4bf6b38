"""Measure the application under gunicorn (WSGI) and uvicorn (ASGI), on loopback only.

    .venv/bin/python scripts/bench_serving.py [--duration 10] [--connections 16]

Each arrangement is started on a free 127.0.0.1 port, warmed up, driven for a fixed time by wrk
(or, without wrk, by a fixed number of requests from a small Python client), then stopped. Two
endpoints: /healthz (the cheapest request the stack can serve) and a DRF JSON view that makes one
database round trip, which exists only in this benchmark's own URLconf. The database is
DATABASE_URL when set (PostgreSQL, like production), else a throwaway SQLite file.
Results are printed as a Markdown table; docs/serving.md records a run.
"""

import argparse
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from benchlib import HOST, Result, free_port, run_wrk, stop, wait_until_serving

REPO = Path(__file__).resolve().parent.parent

BENCH_SETTINGS = """\
from config.settings.base import *  # noqa: F403

ROOT_URLCONF = "bench_urls"
"""

BENCH_URLS = """\
from django.db import connection
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns


class BenchView(APIView):
    # A typical small API read: DRF's request and response cycle plus one database round trip.
    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            (one,) = cursor.fetchone()
        return Response({"ok": one == 1, "version": request.version})


urlpatterns = [path("bench/drf/", BenchView.as_view()), *project_urlpatterns]
"""

ENDPOINTS = {"healthz": "/healthz", "drf+db": "/bench/drf/"}


@dataclass(frozen=True)
class Arrangement:
    name: str
    command: list[str]
    environment: dict[str, str] = field(default_factory=dict)


# Under ASGI each request runs its sync code in a thread of its own, so a persistent connection
# (one per thread) is left behind by every request until PostgreSQL refuses more. Connections
# closed at the end of each request keep the count at the number of requests in flight.
ASGI_DATABASE = {"DATABASE_CONN_MAX_AGE": "0"}


def arrangements(port: int) -> list[Arrangement]:
    python = sys.executable
    gunicorn = [python, "-m", "gunicorn", "config.wsgi:application", "--bind", f"{HOST}:{port}"]
    uvicorn = [
        python, "-m", "uvicorn", "config.asgi:application",
        "--host", HOST, "--port", str(port),
        "--lifespan", "off", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return [
        Arrangement("gunicorn WSGI, 2 sync workers", [*gunicorn, "--workers", "2"]),
        Arrangement("gunicorn WSGI, 4 sync workers", [*gunicorn, "--workers", "4"]),
        Arrangement("uvicorn ASGI, 1 process", uvicorn, ASGI_DATABASE),
        Arrangement("uvicorn ASGI, 2 processes", [*uvicorn, "--workers", "2"], ASGI_DATABASE),
    ]


# --- Load generators ----------------------------------------------------------------------------


def run_python_client(url: str, *, requests: int, connections: int) -> Result:
    """A fixed number of requests from `connections` threads, each with a keep-alive client."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    share = [requests // connections + (i < requests % connections) for i in range(connections)]

    def worker(count: int) -> None:
        nonlocal errors
        with httpx.Client(timeout=5.0) as client:
            for _ in range(count):
                started = time.perf_counter()
                try:
                    ok = client.get(url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    errors += not ok

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(count,)) for count in share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return Result(
        requests_per_second=len(latencies) / wall,
        p50_ms=cuts[49] * 1000,
        p99_ms=cuts[98] * 1000,
        errors=errors,
    )


# --- Main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument(
        "--requests", type=int, default=3000, help="requests per run without wrk (fixed count)"
    )
    parser.add_argument(
        "--python-client", action="store_true", help="use the Python client even if wrk is there"
    )
    options = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not options.python_client

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as workdir:
        directory = Path(workdir)
        (directory / "bench_settings.py").write_text(BENCH_SETTINGS)
        (directory / "bench_urls.py").write_text(BENCH_URLS)
        database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{directory / 'bench.db'}"
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join([str(directory), str(REPO)]),
            "DJANGO_SETTINGS_MODULE": "bench_settings",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": database_url,
            # Logging every request would measure the log handler; warnings still show.
            "LOG_LEVEL": "WARNING",
        }
        load = (
            f"wrk, {options.connections} connections, {options.duration:g} s per run"
            if use_wrk
            else f"Python client, {options.connections} connections, {options.requests} requests"
        )
        print(f"# {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}")
        print(f"# database: {database_url.split('://', 1)[0]}; load: {load}")
        print("| server | endpoint | requests/s | p50 ms | p99 ms | errors |")
        print("|---|---|---:|---:|---:|---:|")

        port = free_port()
        for arrangement in arrangements(port):
            log_path = directory / "server.log"
            log = log_path.open("ab")
            process = subprocess.Popen(  # noqa: S603  (a fixed command line)
                arrangement.command,
                cwd=REPO,
                env={**environment, **arrangement.environment},
                stdout=log,
                stderr=log,
            )
            try:
                base_url = f"http://{HOST}:{port}"
                wait_until_serving(base_url, process, log_path)
                for label, path in ENDPOINTS.items():
                    url = base_url + path
                    if use_wrk:
                        run_wrk(url, duration=2, connections=options.connections)  # warm-up
                        result = run_wrk(
                            url, duration=options.duration, connections=options.connections
                        )
                    else:
                        run_python_client(url, requests=200, connections=options.connections)
                        result = run_python_client(
                            url, requests=options.requests, connections=options.connections
                        )
                    print(
                        f"| {arrangement.name} | {label} | {result.requests_per_second:,.0f} "
                        f"| {result.p50_ms:.1f} | {result.p99_ms:.1f} | {result.errors} |",
                        flush=True,
                    )
            finally:
                stop(process)
                log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
