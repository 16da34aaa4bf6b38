"""The Celery application. Tasks are thin: they re-enter the caller's context and call services.

Re-entering the caller's context is done here, for every task, by the propagators registered in
kernel.tracing (the request id; see that module to add one):

- Sending: `before_task_publish` puts `capture_context()` in the message's CONTEXT_HEADER. It
  covers every way a task is sent: `delay()`, `apply_async()`, canvas, retries, `send_task()`.
- Running: `ContextTask.before_start` enters `restored_context()`; `task_postrun`, which Celery
  sends whatever happened, leaves it. In between, the task body and Celery's own lines about the
  task ("succeeded", "raised") carry the context. A `restore` that raises fails the task before
  its body runs (a signal receiver would only log the error, and the task would run without it).
- Eager mode (the embedded default) sends no message, so the context is captured when the task
  starts, which inline is the caller's moment; from there the task runs as in a worker.

Logging: the worker and beat use the project's logging (settings.LOGGING) instead of installing
Celery's text handlers, so their lines are JSON like everyone else's, at LOG_LEVEL.
"""

import logging.config
import math
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from celery import Celery, Task
from celery.contrib.django.task import DjangoTask
from celery.signals import (
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)
from celery.utils.quorum_queues import detect_quorum_queues

from config.settings.brokers import broker_is_amqp
from kernel.tracing import capture_context, restored_context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
# In multiprocess mode prometheus_client writes to this directory from the first metric made,
# which is as Django's apps load: it must exist by then. (gunicorn's on_starting hook makes it
# for the API; a worker empties it as it starts, kernel.metrics.serve_worker_metrics.)
if multiprocess_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(multiprocess_dir).mkdir(parents=True, exist_ok=True)

CONTEXT_HEADER = "tenantapi_context"
# The exchanges of RabbitMQ's native delayed delivery (kombu.transport.native_delayed_delivery).
NATIVE_DELAY_EXCHANGE_PREFIX = "celery_delayed_"
# Where the running task's context scope is kept: on its own request object, so that nested eager
# tasks (a task calling another inline) each close their own scope.
_SCOPE_ATTRIBUTE = "_tenantapi_context_scope"


class ContextTask(DjangoTask):
    """The base of every task of this app: runs the task in its caller's context.

    It extends Celery's DjangoTask (which Celery uses when no task_cls is given), so
    `delay_on_commit()` and `apply_async_on_commit()` stay available. A task given a base class of
    its own must extend this one, and call `super().before_start()` if it overrides it.
    """

    def apply_async(self, *args: Any, **options: Any) -> Any:
        # RabbitMQ's native delayed delivery (quorum queues: config/settings/brokers.py) counts
        # whole seconds: Celery truncates a countdown to them, and raises ValueError for one
        # under a second (webhook retries, jittered from 0, ask for such). Rounded up instead,
        # the message is never delivered before it is due, and so runs on arrival
        # (_run_natively_delayed_on_arrival). A retry comes through here too (Task.retry).
        countdown = options.get("countdown")
        if countdown is not None and countdown > 0 and _delays_natively(self.app):
            options["countdown"] = math.ceil(countdown)
        return super().apply_async(*args, **options)

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        request = self.request
        captured = (request.headers or {}).get(CONTEXT_HEADER)
        if captured is None and request.is_eager:
            captured = capture_context()
        scope = ExitStack()
        setattr(request, _SCOPE_ATTRIBUTE, scope)
        scope.enter_context(restored_context(captured or {}, task_id=task_id, task_name=self.name))


def _delays_natively(app: Celery) -> bool:
    """Whether a countdown is sent to RabbitMQ's delayed delivery, as Celery decides it."""
    return broker_is_amqp(app.conf.broker_write_url) and detect_quorum_queues(app, "amqp")[0]


app = Celery("tenantapi", task_cls=ContextTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@before_task_publish.connect(dispatch_uid="tenantapi.capture_task_context")
def _capture_task_context(headers: dict[str, Any], **_: Any) -> None:
    # A retry re-sends its request's headers: keep the context the task was first sent with.
    headers.setdefault(CONTEXT_HEADER, capture_context())


@before_task_publish.connect(dispatch_uid="tenantapi.stamp_sent_at")
def _stamp_sent_at(headers: dict[str, Any], **_: Any) -> None:
    # When the message entered its queue: the queue's oldest-message age on /metrics.
    from kernel import queues

    queues.stamp_sent_at(headers)


@before_task_publish.connect(dispatch_uid="tenantapi.native_delay_without_eta")
def _run_natively_delayed_on_arrival(
    headers: dict[str, Any], exchange: Any = None, **_: Any
) -> None:
    # A message RabbitMQ delays (ContextTask.apply_async) arrives when it is due, by the broker's
    # clock: without its ETA the worker runs it then, instead of comparing the ETA with its own
    # clock and holding the message meanwhile in a prefetch slot (fixed, with quorum queues).
    if str(getattr(exchange, "name", exchange) or "").startswith(NATIVE_DELAY_EXCHANGE_PREFIX):
        headers["eta"] = None


@task_postrun.connect(dispatch_uid="tenantapi.leave_task_context")
def _leave_task_context(task: Task, **_: Any) -> None:
    scope = getattr(task.request, _SCOPE_ATTRIBUTE, None)
    if scope is not None:
        delattr(task.request, _SCOPE_ATTRIBUTE)
        scope.close()


@task_prerun.connect(dispatch_uid="tenantapi.task_metrics_start")
def _time_task(task: Task, **_: Any) -> None:
    from kernel import metrics

    metrics.task_started(task)


@task_postrun.connect(dispatch_uid="tenantapi.task_metrics_finish")
def _count_task(task: Task, state: str | None = None, **_: Any) -> None:
    from kernel import metrics

    metrics.task_finished(task, state)


@worker_init.connect(dispatch_uid="tenantapi.worker_metrics")
def _serve_worker_metrics(**_: Any) -> None:
    from kernel import metrics

    metrics.serve_worker_metrics()


@worker_init.connect(dispatch_uid="tenantapi.worker_tracing")
@worker_process_init.connect(dispatch_uid="tenantapi.worker_process_tracing")
def _set_up_tracing(**_: Any) -> None:
    # In the worker's main process (the solo and threads pools run tasks there) and in each
    # process of the prefork pool; set up once per process (kernel/telemetry.py).
    from kernel import telemetry

    telemetry.setup("worker")


@worker_process_shutdown.connect(dispatch_uid="tenantapi.worker_process_metrics")
def _forget_worker_process(pid: int, **_: Any) -> None:
    from kernel import metrics

    metrics.worker_process_exited(pid)


@setup_logging.connect(dispatch_uid="tenantapi.celery_logging")
def _use_project_logging(**_: Any) -> None:
    # Having a receiver at all is what stops Celery from adding its own handlers; configuring
    # again here makes the worker independent of when Django's setup happens to run.
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
