"""Fail fast, with a clear message, when the services the tests need do not answer."""

import os
import sys

import psycopg
import redis


def main() -> int:
    problems = []
    database_url = os.environ["DATABASE_URL"]
    try:
        # The database itself may not exist yet (the test run creates its own); the server must.
        with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", connect_timeout=3):
            pass
    except psycopg.Error as exc:
        problems.append(f"PostgreSQL is not reachable ({exc.__class__.__name__}: {exc}).")
    for name in ("REDIS_URL", "CELERY_BROKER_URL"):
        try:
            redis.Redis.from_url(os.environ[name], socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            problems.append(f"Redis at {name} is not reachable ({exc}).")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(
            "The tests need PostgreSQL and Redis on localhost (see README, 'Running the tests').",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
