"""Production settings with the benchmark's URLconf: scripts/bench_catalog.py serves these.

Everything else is config.settings.production, read from the environment the script sets. The
one addition, a bare JSON view (scripts/bench_urls.py), exists only here, never in a deployment.
"""

from config.settings.production import *  # noqa: F403

ROOT_URLCONF = "bench_urls"
