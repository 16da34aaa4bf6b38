"""Fail fast, with a clear message, when the services the tests need do not answer."""

import os
import sys

import kombu
import psycopg
import redis

# The worker drills run on RabbitMQ too (tests/fixtures/brokers.py), which creates a virtual host
# of its own with rabbitmqctl: the node must answer this user.
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


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
    try:
        with kombu.Connection(RABBITMQ_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        problems.append(f"RabbitMQ is not reachable at TEST_RABBITMQ_URL ({exc}).")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(
            "The tests need PostgreSQL, Redis and RabbitMQ on localhost"
            " (see README, 'Running the tests').",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
