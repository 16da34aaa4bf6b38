"""What the benchmark scripts share: servers on loopback, wrk, scratch databases, the machine.

Used by scripts/bench_serving.py, scripts/bench_catalog.py and scripts/bench_fanout.py; not part
of the application. Everything here targets 127.0.0.1 only: these helpers drive load at whatever
they are pointed to.
"""

import argparse
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

HOST = "127.0.0.1"  # never anything else
START_TIMEOUT = 30.0


# --- servers ----------------------------------------------------------------------------------


def throwaway_signing_key() -> str:
    """A fresh RSA key in PEM, for OIDC_RSA_PRIVATE_KEY: production settings require one (it
    signs OpenID Connect ID tokens, docs/oauth.md), and a benchmark's server signs nothing that
    outlives it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until_serving(
    url: str, process: subprocess.Popen, log_path: Path, *, timeout: float = START_TIMEOUT
) -> None:
    """Poll `url`/healthz until it answers 200; on failure show the end of the server's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    # The log usually lives in a temporary directory that is about to go: show its end now.
    tail = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the server did not start serving:\n{tail}")


def stop(process: subprocess.Popen) -> None:
    """Stop one process we started: SIGTERM, then SIGKILL after 15 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- wrk ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx responses plus socket errors
    requests: int = 0


def _milliseconds(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> Result:
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    requests = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    return Result(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        p50_ms=_milliseconds(latency["50"]),
        p99_ms=_milliseconds(latency["99"]),
        errors=errors,
        requests=int(requests.group(1)) if requests else 0,
    )


def run_wrk(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int = 2,
    headers: Sequence[str] = (),
    script: Path | None = None,
) -> Result:
    """One wrk run with a fixed number of connections for a fixed time (5 s request timeout).

    `headers` are "Name: value" strings; `script` a Lua file (wrk's request/response hooks).
    """
    command = [
        "wrk", "--threads", str(threads), "--connections", str(connections),
        "--duration", f"{duration:g}s", "--timeout", "5s", "--latency",
    ]  # fmt: skip
    for header in headers:
        command += ["--header", header]
    if script is not None:
        command += ["--script", str(script)]
    command.append(url)
    completed = subprocess.run(  # noqa: S603  (a fixed command line)
        command, capture_output=True, text=True, check=True, timeout=duration + 30
    )
    try:
        return parse_wrk(completed.stdout)
    except (AttributeError, KeyError) as exc:  # no latency block: nothing completed
        raise RuntimeError(f"wrk measured nothing:\n{completed.stdout}{completed.stderr}") from exc


def wrk_version() -> str:
    if shutil.which("wrk") is None:
        return "absent"
    # wrk prints its version on any unknown option, with exit status 1.
    output = subprocess.run(
        ["wrk", "--version"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    match = re.search(r"wrk (\S+)", output)
    return match.group(1) if match else "unknown"


# --- scratch databases --------------------------------------------------------------------------


def server_url(database_url: str) -> str:
    """`postgres://user@host:port/name` → the same server's `postgres` maintenance database."""
    return database_url.rsplit("/", 1)[0] + "/postgres"


def hold_run_lock(database_url: str, benchmark: str) -> psycopg.Connection:
    """Exit when another run of `benchmark` is going on against the same PostgreSQL server: it
    would drop this run's database and delete its Redis keys (the names are the benchmark's
    own), and two runs sharing the machine would both measure wrong.

    A session advisory lock, held by the connection returned: keep it for the whole run. It is
    released when the process ends, however it ends.
    """
    connection = psycopg.connect(server_url(database_url), autocommit=True, connect_timeout=5)
    row = connection.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [benchmark]).fetchone()
    if not row[0]:
        connection.close()
        raise SystemExit(f"error: another {benchmark} run is going on; wait for it to end")
    return connection


def recreate_database(database_url: str) -> None:
    """Drop (disconnecting whoever uses it) and create the database `database_url` names."""
    drop_database(database_url)
    name = sql.Identifier(database_url.rsplit("/", 1)[1])
    with psycopg.connect(server_url(database_url), autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))


def drop_database(database_url: str) -> None:
    name = sql.Identifier(database_url.rsplit("/", 1)[1])
    with psycopg.connect(server_url(database_url), autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def postgres_version(database_url: str) -> str:
    with psycopg.connect(server_url(database_url), connect_timeout=5) as admin:
        return admin.execute("SHOW server_version").fetchone()[0].split()[0]


# --- Redis --------------------------------------------------------------------------------------


def delete_redis_keys(redis_url: str, prefix: str) -> int:
    """Delete the keys starting with `prefix` in the database `redis_url` names; never FLUSHDB,
    since the server (and maybe the database number) is shared."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
    finally:
        client.close()
    return deleted


def redis_version(redis_url: str) -> str:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return client.info("server")["redis_version"]
    finally:
        client.close()


# --- the machine ------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a live process has used so far (Linux /proc), 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    """The live children of `pid` (gunicorn's workers, say)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs ({platform.machine()}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def percentile(values: Sequence[float], percent: float) -> float:
    """The `percent`th percentile, interpolated (statistics' 'inclusive' method)."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    if percent >= 100:
        return max(values)
    return cuts[int(percent) - 1]


def add_service_arguments(
    parser: argparse.ArgumentParser, *, database: str, key_prefix: str
) -> None:
    """The PostgreSQL and Redis every benchmark runs against, each on its own database."""
    parser.add_argument(
        "--postgres",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432"),
        help="PostgreSQL server URL (a superuser: the database is created and dropped)",
    )
    parser.add_argument("--database", default=database, help="dropped and recreated")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        help=f"a Redis database number of its own; only keys under '{key_prefix}' are deleted",
    )


def app_environment(
    *, database_url: str, redis_url: str, key_prefix: str, settings_module: str, pythonpath: str
) -> dict[str, str]:
    """What the application's processes of a run get: production settings with throwaway
    secrets, and every Redis key (cache, channels, rate limits, the broker's) under the run's
    prefix, so that cleaning up finds them all. A script adds or overrides its own."""
    from cryptography.fernet import Fernet

    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": pythonpath,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "OIDC_RSA_PRIVATE_KEY": throwaway_signing_key(),
        "MFA_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": f"{HOST},localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_BROKER_TRANSPORT_OPTIONS": (
            f'{{"visibility_timeout": 3600, "global_keyprefix": "{key_prefix}:celery:"}}'
        ),
        "CACHE_KEY_PREFIX": key_prefix,
        "CHANNELS_PREFIX": f"{key_prefix}:asgi",
        "RATELIMIT_KEY_PREFIX": f"{key_prefix}:rl",
        # A token must outlive the run (15 minutes by default).
        "ACCESS_TOKEN_LIFETIME_MINUTES": "240",
        "LOG_LEVEL": "WARNING",
    }


def clean_up(*, database_url: str, redis_url: str, key_prefix: str) -> None:
    """Drop the run's database and delete its Redis keys, whatever state the run ended in."""
    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # noqa: S110  (Django may not have been set up)
        pass
    drop_database(database_url)
    delete_redis_keys(redis_url, key_prefix)
