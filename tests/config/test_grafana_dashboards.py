"""deploy/grafana and deploy/prometheus against what the application really exports: every metric
a dashboard panel, a dashboard variable or a Prometheus rule names is served by a live /metrics
or recorded by a rule of deploy/prometheus. A dashboard of a metric nobody exports would show
"No data" on the night it is needed."""

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
# Series Prometheus makes itself, for every target.
PROMETHEUS_SERIES = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
# PromQL words that look like names but are not series.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (not its functions, labels or keywords)."""
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = _GROUPING.sub("", expr)
    expr = re.sub(r"\b\d[\w.]*", "", expr)  # numbers and durations (offset 5m)
    names = set()
    for match in _NAME.finditer(expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


def dashboard_queries() -> dict[str, list[str]]:
    """Each dashboard's PromQL: its panels' targets and its variables' label_values()."""
    queries: dict[str, list[str]] = {}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        found = [
            target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
        ]
        for variable in dashboard["templating"]["list"]:
            (metric,) = re.findall(r"label_values\((\w+),", variable["query"]["query"])
            found.append(metric)
        queries[path.name] = found
    return queries


def rules() -> list[dict]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def exported_names(exposition: str) -> set[str]:
    """Every name a /metrics text declares or samples, histograms' series included."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def exported(live_asgi_server) -> set[str]:
    # One process (no multiprocess mode), so that every metric it registered declares its type
    # even before it has a value.
    # A request first, as any serving process has had: django-prometheus declares the cache's
    # metrics when a cache is first used.
    httpx.get(f"{live_asgi_server.url}/readyz", timeout=30)
    response = httpx.get(f"{live_asgi_server.url}/metrics", timeout=30)
    assert response.status_code == 200
    return exported_names(response.text) | PROMETHEUS_SERIES


def unknown(expressions: list[str], known: set[str]) -> set[str]:
    return {name for expr in expressions for name in metric_names(expr)} - known


def test_the_expression_reader_finds_series_and_nothing_else():
    expr = (
        'sum by (plan, le) (rate(a_total{status=~"5..", x="y"}[5m])) / ignoring(job) b:c:rate5m'
        " or on() vector(0) > bool 1 and histogram_quantile(0.99, d_bucket) unless up offset 5m"
    )
    assert metric_names(expr) == {"a_total", "b:c:rate5m", "d_bucket", "up"}


def test_the_dashboards_are_what_their_script_writes():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "grafana_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_five_dashboards_each_with_panels():
    titles = {json.loads(path.read_text())["uid"] for path in DASHBOARDS}
    assert titles == {
        "tenantapi-overview",
        "tenantapi-tenants",
        "tenantapi-catalog-cache",
        "tenantapi-notifications",
        "tenantapi-celery",
    }
    assert all(queries for queries in dashboard_queries().values())


@pytest.mark.django_db
def test_every_dashboard_query_reads_an_exported_or_recorded_metric(exported):
    known = exported | recorded_names()
    missing = {
        name: sorted(unknown(queries, known)) for name, queries in dashboard_queries().items()
    }
    assert not any(missing.values()), f"metrics nobody exports or records: {missing}"


@pytest.mark.django_db
def test_every_prometheus_rule_reads_an_exported_or_recorded_metric(exported):
    known = exported | recorded_names()
    missing = {
        rule.get("record") or rule["alert"]: sorted(unknown([rule["expr"]], known))
        for rule in rules()
    }
    assert not any(missing.values()), f"metrics nobody exports or records: {missing}"
