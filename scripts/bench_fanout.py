"""How long one notification takes to reach N open WebSockets, against the channel layer's ceiling.

    .venv/bin/python scripts/bench_fanout.py [--sockets 1,100,1000] [--rounds 20] [--processes 1]

Needs PostgreSQL and Redis on localhost (docs/benchmarks.md). Loopback only, bounded (every round
waits at most ROUND_TIMEOUT seconds), and it cleans up after itself: the database `bench_fanout`
is dropped and recreated at the start and dropped at the end, the Redis keys under its prefix
deleted, the processes it started stopped.

For each N, a tenant with N members (viewers: they hold notifications.read) is served by uvicorn
as in production (`config.asgi`, production settings, channels-redis on Redis), and N sockets
are opened from this process with the `websockets` client. A separate "pusher" process stands in
for the Celery worker that pushes in production. Four paths, each timed from the moment the
pusher starts the call until the last of the N sockets (or channels) has the message:

- push: `push_notifications()` of one notification to one member who has N sockets open (N tabs
  or devices): one group_send to a group of N channels, then the server's consumers, then the
  sockets. The real-time path alone, comparable with the first ceiling.
- fan-out: `notifications_fan_out()` of one domain event to N members, one socket each: what a
  catalog event costs end to end once its Celery task runs: N notification rows stored, then one
  push per recipient after commit.
- ceiling, one group: a bare channels-redis `group_send` to a group of N channels received by one
  process (no ASGI server, consumer, WebSocket or JSON).
- ceiling, N groups: N bare `group_send`s, one per channel, from one event loop: the floor for
  the fan-out's pushes.
"""

import argparse
import asyncio
import contextlib
import datetime
import json
import multiprocessing
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from benchlib import (
    HOST,
    add_service_arguments,
    app_environment,
    child_pids,
    clean_up,
    cpu_seconds,
    delete_redis_keys,
    free_port,
    hold_run_lock,
    load_average,
    machine,
    percentile,
    postgres_version,
    recreate_database,
    redis_version,
    stop,
    wait_until_serving,
)

REPO = Path(__file__).resolve().parent.parent
KEY_PREFIX = "bench-fanout"  # every Redis key of the run starts with it
ROUND_TIMEOUT = 15.0  # seconds a round waits for its last message before counting it lost
WARMUP_ROUNDS = 2
TOPIC = "catalog.product.updated"


def environment_for(*, database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **app_environment(
            database_url=database_url,
            redis_url=redis_url,
            key_prefix=KEY_PREFIX,
            settings_module="config.settings.production",
            pythonpath=str(REPO),
        ),
        # As docs/serving.md runs uvicorn: a connection per request (persistent connections
        # pile up, one per thread, under ASGI).
        "DATABASE_CONN_MAX_AGE": "0",
    }


# --- seeding ------------------------------------------------------------------------------------


@dataclass
class Tenant:
    id: str
    owner_id: str
    member_ids: list[str]
    member_tokens: list[str]


def seed(members: int) -> Tenant:
    """A tenant (on a plan that allows the members) with an owner and `members` viewers."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from accounts.sessions import issue_tokens
    from kernel.context import tenant_context
    from kernel.permissions import VIEWER
    from kernel.tenancy.models import Membership, MembershipRole, Plan, Role
    from kernel.tenants import tenant_create

    User = get_user_model()
    huge = 1_000_000_000
    Plan.objects.update_or_create(
        code="bench",
        defaults={
            "name": "Benchmark",
            "requests_per_minute": huge,
            "burst": huge,
            "max_members": huge,
            "max_api_keys": 10,
            "max_products": 10,
        },
    )
    slug = f"fanout-{members}"
    owner = User.objects.create_user(f"owner@{slug}.example", secrets.token_urlsafe(16))
    tenant = tenant_create(name=slug, slug=slug, owner=owner, plan_code="bench")
    unusable = make_password(None)  # they sign in with the tokens below only
    users = User.objects.bulk_create(
        User(email=f"member{i}@{slug}.example", password=unusable, name=f"Member {i}")
        for i in range(members)
    )
    with tenant_context(tenant.id):
        viewer = Role.objects.get(name=VIEWER)
        memberships = Membership.objects.bulk_create(Membership(user=user) for user in users)
        MembershipRole.objects.bulk_create(
            MembershipRole(membership=membership, role=viewer) for membership in memberships
        )
    tokens = [issue_tokens(user=user, tenant=tenant)["access"] for user in users]
    return Tenant(str(tenant.id), str(owner.id), [str(user.id) for user in users], tokens)


# --- the pusher: the Celery worker's part, in a process of its own ----------------------------


def pusher_main(connection, environment: dict[str, str]) -> None:
    """Runs commands from the parent; answers each with (started, finished) perf_counter times.

    perf_counter is CLOCK_MONOTONIC on Linux, one clock for every process of the machine, so the
    parent can compare these times with its own arrival times.
    """
    os.environ.update(environment)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from kernel.context import tenant_context
    from kernel.events import Event
    from notifications.realtime import push_notifications
    from notifications.services import notifications_fan_out

    layer = get_channel_layer()

    async def send_each(groups: list[str], message: dict) -> None:
        for group in groups:
            await layer.group_send(group, message)

    while True:
        command, *args = connection.recv()
        if command == "stop":
            break
        started = time.perf_counter()
        if command == "push":  # one notification, to one user's sockets
            tenant_id, user_id, round_id = args
            payload = {
                "id": str(uuid.uuid4()),
                "topic": TOPIC,
                "data": {"round": round_id},
                "created_at": _now(),
            }
            push_notifications(tenant_id, [(user_id, round_id, payload)])
        elif command == "fan_out":  # one event, to every member, stored then pushed
            tenant_id, actor_id, round_id = args
            event = Event(
                id=uuid.uuid4().hex,
                topic=TOPIC,
                data={"round": round_id},
                tenant_id=tenant_id,
                actor={"user_id": actor_id, "api_key_id": None},
                request_id=None,
                occurred_at=_now(),
            )
            with tenant_context(tenant_id):
                notifications_fan_out(event=event)
        elif command == "group_send":  # ceiling: one group of N channels
            groups, round_id = args
            async_to_sync(send_each)(groups, {"type": "bench.message", "round": round_id})
        connection.send((started, time.perf_counter()))
    connection.close()


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).isoformat().replace("+00:00", "Z")


# --- rounds -------------------------------------------------------------------------------------


@dataclass
class Round:
    id: int = 0
    expected: int = 0
    arrivals: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def arrived(self, round_id: int) -> None:
        if round_id == self.id:
            self.arrivals.append(time.perf_counter())
            if len(self.arrivals) >= self.expected:
                self.done.set()


@dataclass
class Timing:
    path: str
    sockets: int
    processes: int
    all_ms: list[float] = field(default_factory=list)  # start to the last arrival
    first_ms: list[float] = field(default_factory=list)  # start to the first arrival
    call_ms: list[float] = field(default_factory=list)  # how long the pusher's call took
    lost: int = 0  # messages that never arrived, over all rounds
    rounds: int = 0
    load: str = ""
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per round, by process


class Bench:
    def __init__(self, pusher, pusher_pid: int, redis_url: str, rounds: int) -> None:
        self.pusher = pusher
        self.pusher_pid = pusher_pid
        self.redis_url = redis_url
        self.server_pid: int | None = None  # uvicorn, while one runs
        self.rounds = rounds
        self.current = Round()
        self.next_id = 1  # round ids are unique over the whole run: stragglers never count

    def cpu(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far: the server (and its workers), the pusher, this process (the
        sockets' client, or the ceiling's receivers) and the Redis server (shared: other work
        counts too)."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            info = client.info("cpu")
        finally:
            client.close()
        own = resource.getrusage(resource.RUSAGE_SELF)
        server = []
        if self.server_pid is not None:
            server = [self.server_pid, *child_pids(self.server_pid)]
        return {
            "server": {pid: cpu_seconds(pid) for pid in server},
            "pusher": {self.pusher_pid: cpu_seconds(self.pusher_pid)},
            "client": {0: own.ru_utime + own.ru_stime},
            "redis": {0: info["used_cpu_user"] + info["used_cpu_sys"]},
        }

    def arrived(self, round_id: int) -> None:
        self.current.arrived(round_id)

    def _call(self, command: tuple) -> tuple[float, float]:
        self.pusher.send(command)
        return self.pusher.recv()

    async def measure(self, timing: Timing, make_command, expected: int) -> Timing:
        loop = asyncio.get_running_loop()
        before = {}
        for index in range(WARMUP_ROUNDS + self.rounds):
            if index == WARMUP_ROUNDS:
                before = self.cpu()
            self.current = Round(id=self.next_id, expected=expected)
            self.next_id += 1
            started, finished = await loop.run_in_executor(
                None, self._call, make_command(self.current.id)
            )
            with contextlib.suppress(TimeoutError):  # counted as lost below
                await asyncio.wait_for(self.current.done.wait(), ROUND_TIMEOUT)
            arrivals = self.current.arrivals
            if index >= WARMUP_ROUNDS:
                timing.rounds += 1
                timing.call_ms.append((finished - started) * 1000)
                timing.lost += expected - len(arrivals)
                if arrivals:
                    timing.first_ms.append((min(arrivals) - started) * 1000)
                if len(arrivals) == expected:
                    timing.all_ms.append((max(arrivals) - started) * 1000)
            await asyncio.sleep(0.05)
        after = self.cpu()
        timing.cpu_ms = {
            name: sum(seconds - before[name].get(pid, 0.0) for pid, seconds in after[name].items())
            * 1000
            / self.rounds
            for name in after
        }
        timing.load = load_average().split()[0]
        return timing


# --- sockets ------------------------------------------------------------------------------------


async def open_sockets(url: str, tokens: list[str], bench: Bench) -> list:
    """N authenticated sockets, each with a reader that reports notifications to `bench`."""
    from websockets.asyncio.client import connect

    async def one(token: str):
        socket = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            proxy=None,  # loopback, whatever the environment says about proxies
            ping_interval=None,
            open_timeout=60,
            max_queue=None,
        )
        greeting = json.loads(await asyncio.wait_for(socket.recv(), 60))
        if greeting.get("type") != "authenticated":
            raise RuntimeError(f"the socket was not authenticated: {greeting}")
        socket.reader = asyncio.create_task(read(socket))
        return socket

    async def read(socket) -> None:
        async for message in socket:
            if '"notification"' in message:
                data = json.loads(message)
                if data.get("type") == "notification":
                    bench.arrived(data["data"]["round"])

    sockets = []
    for start in range(0, len(tokens), 50):  # a few at a time: the server authenticates each
        sockets += await asyncio.gather(*(one(token) for token in tokens[start : start + 50]))
    return sockets


async def close_sockets(sockets: list) -> None:
    await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)
    for socket in sockets:
        socket.reader.cancel()


async def open_channels(layer, groups: list[str], bench: Bench) -> list[asyncio.Task]:
    """One channel per group name given (a name may repeat), each with a receiver."""

    async def receive(channel: str) -> None:
        while True:
            message = await layer.receive(channel)
            bench.arrived(message["round"])

    tasks = []
    for group in groups:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        tasks.append(asyncio.create_task(receive(channel)))
    return tasks


# --- main ---------------------------------------------------------------------------------------


def start_server(port: int, processes: int, environment: dict, log_path: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "uvicorn", "config.asgi:application",
        "--host", HOST, "--port", str(port), "--ws", "websockets-sansio",
        "--lifespan", "off", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if processes > 1:
        command += ["--workers", str(processes)]
    log = log_path.open("ab")
    server = subprocess.Popen(  # noqa: S603  (a fixed command line)
        command, cwd=REPO, env=environment, stdout=log, stderr=log
    )
    log.close()
    wait_until_serving(f"http://{HOST}:{port}", server, log_path)
    return server


async def run_sockets(
    bench: Bench, tenants: dict[int, Tenant], options, environment: dict, directory: Path
) -> list[Timing]:
    from channels.layers import get_channel_layer

    timings = []
    for processes in options.processes:
        port = free_port()
        server = start_server(port, processes, environment, directory / "uvicorn.log")
        bench.server_pid = server.pid
        url = f"ws://{HOST}:{port}/ws/v1/notifications/"
        try:
            for n in options.sockets:
                tenant = tenants[n]
                print(f"{processes} process(es), {n} socket(s) of one user ...", flush=True)
                sockets = await open_sockets(url, [tenant.member_tokens[0]] * n, bench)
                user = tenant.member_ids[0]
                timings.append(
                    await bench.measure(
                        Timing("push: one user's N sockets", n, processes),
                        lambda r, t=tenant, u=user: ("push", t.id, u, r),
                        n,
                    )
                )
                await close_sockets(sockets)
                print(f"{processes} process(es), {n} member(s), one socket each ...", flush=True)
                sockets = await open_sockets(url, tenant.member_tokens, bench)
                timings.append(
                    await bench.measure(
                        Timing("fan-out: N members, a socket each", n, processes),
                        lambda r, t=tenant: ("fan_out", t.id, t.owner_id, r),
                        n,
                    )
                )
                await close_sockets(sockets)
        finally:
            bench.server_pid = None
            stop(server)

    layer = get_channel_layer()
    for n in options.sockets:
        print(f"ceiling, {n} channel(s) ...", flush=True)
        group = f"bench-ceiling-{n}"
        receivers = await open_channels(layer, [group] * n, bench)
        timings.append(
            await bench.measure(
                Timing("ceiling: group_send to a group of N", n, 1),
                lambda r, g=group: ("group_send", [g], r),
                n,
            )
        )
        for receiver in receivers:
            receiver.cancel()
        groups = [f"bench-ceiling-{n}-{i}" for i in range(n)]
        receivers = await open_channels(layer, groups, bench)
        timings.append(
            await bench.measure(
                Timing("ceiling: N group_sends, one channel each", n, 1),
                lambda r, g=groups: ("group_send", g, r),
                n,
            )
        )
        for receiver in receivers:
            receiver.cancel()
    return timings


def report(timings: list[Timing], options, context: dict[str, str]) -> None:
    print()
    print(f"Run {context['started']} on {context['machine']}")
    print(f"Load average (1, 5, 15 min) at start: {context['load_start']}")
    print(
        f"PostgreSQL {context['postgres']}, Redis {context['redis']}; {context['versions']}; "
        f"{options.rounds} rounds per row after {WARMUP_ROUNDS} warm-up rounds"
    )
    print()
    print(
        "| path | N | server processes | to all N: p50 ms | p99 ms | max ms | to the first: "
        "p50 ms | pusher's call: p50 ms | lost | load 1 min |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in timings:

        def cell(values: list[float], pct: float) -> str:
            return f"{percentile(values, pct):.1f}" if values else "n/a"

        print(
            f"| {t.path} | {t.sockets:,} | {t.processes} | {cell(t.all_ms, 50)} "
            f"| {cell(t.all_ms, 99)} | {cell(t.all_ms, 100)} | {cell(t.first_ms, 50)} "
            f"| {cell(t.call_ms, 50)} | {t.lost} of {t.sockets * t.rounds:,} | {t.load} |"
        )
    print()
    print(
        "CPU per round, ms (client: this process, the sockets' client or the ceiling's "
        "receivers; Redis: the whole shared server):"
    )
    print()
    print("| path | N | server processes | server | pusher | client | Redis |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t in timings:
        cpu = t.cpu_ms
        print(
            f"| {t.path} | {t.sockets:,} | {t.processes} | {cpu['server']:.1f} "
            f"| {cpu['pusher']:.1f} | {cpu['client']:.1f} | {cpu['redis']:.1f} |"
        )


def versions_line() -> str:
    packages = ["django", "channels", "channels-redis", "redis", "uvicorn", "websockets"]
    return ", ".join(f"{name} {version(name)}" for name in packages)


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sockets", type=_numbers, default=[1, 100, 1000], help="e.g. 1,100")
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds per row")
    parser.add_argument(
        "--processes", type=_numbers, default=[1], help="uvicorn processes, e.g. 1,2"
    )
    add_service_arguments(parser, database="bench_fanout", key_prefix=KEY_PREFIX)
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Each socket is a file descriptor here and one in the server.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * max(options.sockets) + 512
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))

    database_url = f"{options.postgres.rstrip('/')}/{options.database}"
    run_lock = hold_run_lock(database_url, "bench_fanout")  # noqa: F841  (held until the end)
    environment = environment_for(database_url=database_url, redis_url=options.redis_url)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_start = load_average()
    os.environ.update(environment)
    sys.path[:0] = [str(REPO)]
    delete_redis_keys(options.redis_url, KEY_PREFIX)
    recreate_database(database_url)
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    pusher = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fanout-") as workdir:
            import django

            django.setup()
            from django.core.management import call_command
            from django.db import connections

            print(f"migrating {options.database} ...", flush=True)
            call_command("migrate", interactive=False, verbosity=0)
            tenants = {n: seed(n) for n in options.sockets}
            connections.close_all()

            pusher = context.Process(target=pusher_main, args=(child_end, environment))
            pusher.start()
            bench = Bench(parent_end, pusher.pid, options.redis_url, options.rounds)
            timings = asyncio.run(run_sockets(bench, tenants, options, environment, Path(workdir)))
            report(
                timings,
                options,
                {
                    "started": started,
                    "machine": machine(),
                    "load_start": load_start,
                    "postgres": postgres_version(database_url),
                    "redis": redis_version(options.redis_url),
                    "versions": versions_line(),
                },
            )
            print(f"\nLoad average at the end: {load_average()}")
    finally:
        if pusher is not None:
            if pusher.is_alive():
                parent_end.send(("stop",))
                pusher.join(10)
            if pusher.is_alive():
                pusher.terminate()
                pusher.join(5)
        clean_up(database_url=database_url, redis_url=options.redis_url, key_prefix=KEY_PREFIX)
    return 0


if __name__ == "__main__":
    sys.exit(main())
