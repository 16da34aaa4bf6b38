"""config/gunicorn.conf.py's worker hook, run as gunicorn runs it: in a process of its own, after
the configuration file was loaded (the hook changes the collector of the process it runs in)."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

HOOK = (
    "import gc, runpy; "
    "hooks = runpy.run_path('config/gunicorn.conf.py'); "
    "hooks['post_worker_init'](None); "
    "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)"
)


@pytest.mark.parametrize(
    ("configured", "threshold"), [(None, "10000"), ("25000", "25000"), ("0", "700")]
)
def test_a_worker_freezes_what_it_loaded_and_collects_young_objects_less_often(
    configured, threshold
):
    environment = {name: value for name, value in os.environ.items() if name != "GC_GEN0_THRESHOLD"}
    if configured is not None:
        environment["GC_GEN0_THRESHOLD"] = configured
    done = subprocess.run(
        [sys.executable, "-c", HOOK],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # "0" keeps Python's own threshold (700); what the worker loaded is frozen either way.
    assert done.stdout.split() == [threshold, "True"]
