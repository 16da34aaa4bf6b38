"""Writes Grafana's dashboards (deploy/grafana/dashboards/*.json) from the definitions below.

    .venv/bin/python scripts/grafana_dashboards.py          # rewrite the JSON files
    .venv/bin/python scripts/grafana_dashboards.py --check  # exit 1 if they are not up to date

The JSON is committed, so that Grafana's provisioning reads it as is; edit this file, run it, and
commit both. tests/config/test_grafana_dashboards.py fails when a query names a metric that no
live /metrics exports and no recording rule of deploy/prometheus defines, or when the JSON is
not what this script writes.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # deploy/grafana/provisioning
WIDTH = 24  # Grafana's grid


@dataclass
class Panel:
    title: str
    queries: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"  # or stat
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Row:
    title: str
    panels: list[Panel]


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[Row]
    variables: list[dict] = field(default_factory=list)


def query_variable(name: str, label: str, metric: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values({metric}, {name})", "refId": f"{name}-values"},
        "definition": f"label_values({metric}, {name})",
        "refresh": 2,  # on time range change
        "includeAll": True,
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def render_panel(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    defaults: dict = {"unit": panel.unit}
    if panel.thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in panel.thresholds],
        }
        defaults["color"] = {"mode": "thresholds"}
    rendered = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for n, (expr, legend) in enumerate(panel.queries)
        ],
    }
    if panel.description:
        rendered["description"] = panel.description
    if panel.kind == "stat":
        rendered["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"]},
            "colorMode": "background",
        }
    else:
        rendered["options"] = {"legend": {"displayMode": "table", "placement": "right"}}
    return rendered


def render(dashboard: Dashboard) -> dict:
    panels, panel_id, y = [], 1, 0
    for row in dashboard.rows:
        panels.append(
            {"id": panel_id, "type": "row", "title": row.title, "collapsed": False,
             "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1}, "panels": []}
        )  # fmt: skip
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panels.append(render_panel(panel, panel_id, x, y))
            panel_id, x, row_height = panel_id + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["tenantapi"],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": dashboard.variables},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["tenantapi"], "asDropdown": True, "title": "tenantapi"}
        ],
        "panels": panels,
    }


# --- the dashboards ------------------------------------------------------------------------------

UP = 'tenantapi_dependency_up{dependency="%s"}'
RED = [(0, "red"), (1, "green")]

OVERVIEW = Dashboard(
    uid="tenantapi-overview",
    title="tenantapi / Overview",
    description="The platform's health: RED numbers of the API, its dependencies, its processes.",
    rows=[
        Row(
            "Now",
            [
                Panel(
                    "Requests",
                    [("tenantapi:http_requests:rate5m", "req/s")],
                    "reqps",
                    "stat",
                    width=4,
                    height=4,
                ),
                Panel(
                    "5xx ratio",
                    [("tenantapi:http_error_ratio:rate5m", "5xx")],
                    "percentunit",
                    "stat",
                    width=4,
                    height=4,
                    thresholds=[(0, "green"), (0.01, "orange"), (0.05, "red")],
                ),
                Panel(
                    "p99 latency",
                    [("tenantapi:http_latency_seconds:p99_5m", "p99")],
                    "s",
                    "stat",
                    width=4,
                    height=4,
                    thresholds=[(0, "green"), (0.5, "orange"), (1, "red")],
                ),
                Panel(
                    "429 ratio",
                    [("tenantapi:http_rate_limited_ratio:rate5m", "429")],
                    "percentunit",
                    "stat",
                    width=4,
                    height=4,
                    thresholds=[(0, "green"), (0.1, "orange")],
                ),
                Panel(
                    "PostgreSQL",
                    [(f"min({UP % 'database'})", "up")],
                    "bool_yes_no",
                    "stat",
                    width=2,
                    height=4,
                    thresholds=RED,
                ),
                Panel(
                    "Redis",
                    [(f"min({UP % 'cache'})", "up")],
                    "bool_yes_no",
                    "stat",
                    width=2,
                    height=4,
                    thresholds=RED,
                ),
                Panel(
                    "Broker",
                    [(f"min({UP % 'broker'})", "up")],
                    "bool_yes_no",
                    "stat",
                    width=2,
                    height=4,
                    thresholds=RED,
                ),
                Panel(
                    "Channel layer",
                    [(f"min({UP % 'channel_layer'})", "up")],
                    "bool_yes_no",
                    "stat",
                    width=2,
                    height=4,
                    thresholds=RED,
                ),
            ],
        ),
        Row(
            "Routes",
            [
                Panel(
                    "Requests by route",
                    [
                        (
                            "topk(10, view_method:tenantapi_http_requests:rate5m)",
                            "{{method}} {{view}}",
                        )
                    ],
                    "reqps",
                ),
                Panel(
                    "Errors by route (5xx ratio)",
                    [
                        (
                            "topk(10, view_method:tenantapi_http_error_ratio:rate5m > 0)",
                            "{{method}} {{view}}",
                        )
                    ],
                    "percentunit",
                ),
                Panel(
                    "p99 latency by route",
                    [
                        (
                            "topk(10, view_method:tenantapi_http_latency_seconds:p99_5m)",
                            "{{method}} {{view}}",
                        )
                    ],
                    "s",
                    description=(
                        "A slow route's requests log `slow_request` lines (over SLOW_REQUEST_MS) "
                        "with the route, request_id and trace_id: search the logs for "
                        "event=slow_request and that route to reach one of its traces."
                    ),
                ),
                Panel(
                    "Responses by status",
                    [
                        (
                            "sum by (status) (rate("
                            "tenantapi_django_http_responses_total_by_status_view_method_total"
                            '{job="tenantapi-api"}[5m]))',
                            "{{status}}",
                        )
                    ],
                    "reqps",
                ),
            ],
        ),
        Row(
            "Database and processes",
            [
                Panel(
                    "Query p99 by vendor",
                    [
                        (
                            "histogram_quantile(0.99, sum by (vendor, le) "
                            "(rate(tenantapi_django_db_query_duration_seconds_bucket[5m])))",
                            "{{vendor}}",
                        )
                    ],
                    "s",
                ),
                Panel(
                    "New connections and their errors",
                    [
                        ("sum(rate(tenantapi_django_db_new_connections_total[5m]))", "connections"),
                        (
                            "sum(rate(tenantapi_django_db_new_connection_errors_total[5m]))",
                            "errors",
                        ),
                    ],
                    "ops",
                ),
                Panel(
                    "Targets up",
                    [('up{job=~"tenantapi-.*"}', "{{job}} {{instance}}")],
                    "bool_yes_no",
                    description="0: Prometheus cannot scrape the process (down, or refused: check "
                    "METRICS_TOKEN).",
                ),
                Panel(
                    "Exceptions by view",
                    [
                        (
                            "sum by (view) "
                            "(rate(tenantapi_django_http_exceptions_total_by_view_total[5m]))",
                            "{{view}}",
                        )
                    ],
                    "ops",
                ),
            ],
        ),
    ],
)

PLAN_FILTER = '{plan=~"$plan"}'
TENANTS = Dashboard(
    uid="tenantapi-tenants",
    title="tenantapi / Tenants by plan",
    description="RED numbers of the API by the plan of the tenant whose credential made them.",
    variables=[query_variable("plan", "Plan", "tenantapi_tenant_requests_total")],
    rows=[
        Row(
            "Rate, errors, duration",
            [
                Panel(
                    "Requests by plan",
                    [(f"plan:tenantapi_requests:rate5m{PLAN_FILTER}", "{{plan}}")],
                    "reqps",
                ),
                Panel(
                    "5xx ratio by plan",
                    [(f"plan:tenantapi_error_ratio:rate5m{PLAN_FILTER}", "{{plan}}")],
                    "percentunit",
                ),
                Panel(
                    "p50 latency by plan",
                    [(f"plan:tenantapi_latency_seconds:p50_5m{PLAN_FILTER}", "{{plan}}")],
                    "s",
                ),
                Panel(
                    "p99 latency by plan",
                    [(f"plan:tenantapi_latency_seconds:p99_5m{PLAN_FILTER}", "{{plan}}")],
                    "s",
                ),
            ],
        ),
        Row(
            "Limits",
            [
                Panel(
                    "429 by plan",
                    [(f"plan:tenantapi_rate_limited:rate5m{PLAN_FILTER}", "{{plan}}")],
                    "reqps",
                    description="Tenants of a plan hitting their limits (docs/rate-limits.md).",
                ),
                Panel(
                    "Responses by plan and status",
                    [
                        (
                            "sum by (plan, status) "
                            f"(rate(tenantapi_tenant_requests_total{PLAN_FILTER}[5m]))",
                            "{{plan}} {{status}}",
                        )
                    ],
                    "reqps",
                ),
                Panel(
                    "Requests served unchecked (rate-limit backend down)",
                    [
                        (
                            "sum by (outcome) (rate(tenantapi_ratelimit_unchecked_total[5m]))",
                            "{{outcome}}",
                        )
                    ],
                    "reqps",
                ),
                Panel(
                    "Rate-limit leases",
                    [
                        (
                            "sum by (outcome) (rate(tenantapi_ratelimit_leases_total[5m]))",
                            "{{outcome}}",
                        )
                    ],
                    "ops",
                ),
            ],
        ),
    ],
)

CATALOG = Dashboard(
    uid="tenantapi-catalog-cache",
    title="tenantapi / Catalog cache",
    description="Cached catalog reads (docs/catalog.md): hit ratio, misses, errors, tracked keys.",
    rows=[
        Row(
            "Catalog reads",
            [
                Panel(
                    "Hit ratio",
                    [("tenantapi:catalog_cache_hit_ratio:rate5m", "hits")],
                    "percentunit",
                ),
                Panel(
                    "Hits and misses by kind",
                    [
                        (
                            "sum by (kind) (rate(tenantapi_catalog_cache_hits_total[5m]))",
                            "hit {{kind}}",
                        ),
                        (
                            "sum by (kind) (rate(tenantapi_catalog_cache_misses_total[5m]))",
                            "miss {{kind}}",
                        ),
                    ],
                    "ops",
                ),
                Panel(
                    "Cache errors by operation",
                    [
                        (
                            "sum by (operation) (rate(tenantapi_catalog_cache_errors_total[5m]))",
                            "{{operation}}",
                        )
                    ],
                    "ops",
                ),
                Panel(
                    "Catalog route p99",
                    [
                        (
                            'view_method:tenantapi_http_latency_seconds:p99_5m{view=~"product.*|categor.*"}',
                            "{{method}} {{view}}",
                        )
                    ],
                    "s",
                ),
            ],
        ),
        Row(
            "Redis",
            [
                Panel(
                    "Django cache gets",
                    [
                        ("sum(rate(tenantapi_django_cache_get_hits_total[5m]))", "hits"),
                        ("sum(rate(tenantapi_django_cache_get_misses_total[5m]))", "misses"),
                        ("sum(rate(tenantapi_django_cache_get_fail_total[5m]))", "failures"),
                    ],
                    "ops",
                ),
                Panel(
                    "Tracked keys: reads and lost connections",
                    [
                        ("sum(rate(tenantapi_tracked_keys_reads_total[5m]))", "reads"),
                        (
                            "sum by (reason) (rate(tenantapi_tracked_keys_lost_total[5m]))",
                            "lost {{reason}}",
                        ),
                    ],
                    "ops",
                ),
            ],
        ),
    ],
)

NOTIFICATIONS = Dashboard(
    uid="tenantapi-notifications",
    title="tenantapi / Notifications and webhooks",
    description="The outbox, webhook deliveries and WebSocket pushes.",
    rows=[
        Row(
            "Outbox",
            [
                Panel(
                    "Pending events",
                    [
                        ("max(tenantapi_outbox_pending)", "pending"),
                        ("max(tenantapi_outbox_stuck)", "stuck"),
                    ],
                    width=8,
                ),
                Panel(
                    "Oldest pending event",
                    [("max(tenantapi_outbox_oldest_pending_age_seconds)", "age")],
                    "s",
                    width=8,
                ),
                Panel(
                    "Events relayed again",
                    [("sum(rate(tenantapi_outbox_relayed_total[5m]))", "relayed")],
                    "ops",
                    width=8,
                ),
            ],
        ),
        Row(
            "Webhooks",
            [
                Panel(
                    "Delivery attempts by outcome",
                    [("outcome:tenantapi_webhook_delivery_attempts:rate5m", "{{outcome}}")],
                    "ops",
                ),
                Panel(
                    "Dead letters (30 min)",
                    [
                        (
                            'sum(increase(tenantapi_webhook_delivery_attempts_total{outcome="dead"}[30m]))',
                            "dead",
                        )
                    ],
                    description="Deliveries given up on; redeliver once fixed (docs/webhooks.md).",
                ),
            ],
        ),
        Row(
            "WebSockets",
            [
                Panel(
                    "Pushes dropped by the channel layer",
                    [
                        (
                            "sum by (group_kind) (rate(tenantapi_channel_layer_dropped_total[5m]))",
                            "{{group_kind}}",
                        )
                    ],
                    "ops",
                ),
                Panel(
                    "Slow sockets closed",
                    [("sum(rate(tenantapi_websocket_slow_closed_total[5m]))", "closed")],
                    "ops",
                ),
            ],
        ),
    ],
)

CELERY = Dashboard(
    uid="tenantapi-celery",
    title="tenantapi / Celery",
    description="Broker queues (depth, oldest message), tasks by outcome and duration.",
    variables=[query_variable("queue", "Queue", "tenantapi_celery_queue_length")],
    rows=[
        Row(
            "Queues",
            [
                Panel(
                    "Messages waiting",
                    [('queue:tenantapi_celery_queue_length:max{queue=~"$queue"}', "{{queue}}")],
                ),
                Panel(
                    "Oldest message's wait",
                    [
                        (
                            'queue:tenantapi_celery_queue_oldest_message_age_seconds:max{queue=~"$queue"}',
                            "{{queue}}",
                        )
                    ],
                    "s",
                ),
            ],
        ),
        Row(
            "Tasks",
            [
                Panel(
                    "Tasks by name and outcome",
                    [("task_outcome:tenantapi_celery_tasks:rate5m", "{{task}} {{outcome}}")],
                    "ops",
                ),
                Panel(
                    "Task p99 by name",
                    [("task:tenantapi_celery_task_duration_seconds:p99_5m", "{{task}}")],
                    "s",
                ),
                Panel(
                    "Failures",
                    [
                        (
                            "sum by (task) "
                            '(task_outcome:tenantapi_celery_tasks:rate5m{outcome=~"failure|retry"})',
                            "{{task}}",
                        )
                    ],
                    "ops",
                ),
                Panel(
                    "Broker reachable",
                    [(f"min({UP % 'broker'})", "up")],
                    "bool_yes_no",
                    "stat",
                    thresholds=RED,
                ),
            ],
        ),
    ],
)

DASHBOARDS = {
    "overview.json": OVERVIEW,
    "tenants.json": TENANTS,
    "catalog-cache.json": CATALOG,
    "notifications.json": NOTIFICATIONS,
    "celery.json": CELERY,
}


def rendered() -> dict[str, str]:
    return {name: json.dumps(render(d), indent=2) + "\n" for name, d in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    files = rendered()
    if "--check" in argv:
        stale = [
            n
            for n, text in files.items()
            if not (OUTPUT / n).exists() or (OUTPUT / n).read_text() != text
        ]
        if stale:
            print(
                f"out of date, run scripts/grafana_dashboards.py: {', '.join(stale)}",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUTPUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
