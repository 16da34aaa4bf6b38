"""deploy/k8s as a cluster would take it, checked offline (no cluster, no network): every manifest
validates against the Kubernetes API's own schemas (kubernetes-validate, strict, with the schemas
it bundles), checkov finds nothing it has not been told why to accept, and the manifests run the
processes, probes, queues and settings that the rest of the repository defines."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
MANIFEST_FILES = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
KUSTOMIZATIONS = sorted(K8S.rglob("kustomization.yaml"))
# The oldest Kubernetes the manifests are for (every API and field they use exists there), and
# the newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# checkov makes no call out: no platform download, no update check, no upload.
CHECKOV_OFFLINE = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}
SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")
# A skip names one check and says why, in a sentence.
JUSTIFIED_SKIP = re.compile(r"^CKV2?_K8S_\d+=\S.{40,}$", re.DOTALL)
WORKLOAD_KINDS = {"Deployment", "Job"}
SECRET_NAME = "tenantapi-secrets"
# The containers' scratch directory (an emptyDir), not one of this machine.
CONTAINER_TMP = "/tmp"  # noqa: S108
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def documents() -> list[dict]:
    return [doc for path in MANIFEST_FILES for doc in yaml.safe_load_all(path.read_text()) if doc]


DOCUMENTS = documents()
WORKLOADS = {d["metadata"]["name"]: d for d in DOCUMENTS if d["kind"] in WORKLOAD_KINDS}
CONFIG = next(d for d in DOCUMENTS if d["kind"] == "ConfigMap")["data"]


def of_kind(kind: str) -> list[dict]:
    return [d for d in DOCUMENTS if d["kind"] == kind]


def pod(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(name: str) -> dict:
    (only,) = pod(WORKLOADS[name])["containers"]
    return only


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels and matchExpressions' In) selects these labels."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def pod_labels() -> dict[str, dict]:
    return {name: w["spec"]["template"]["metadata"]["labels"] for name, w in WORKLOADS.items()}


def tool(name: str, *places: Path) -> str:
    found = next((str(p) for p in places if p.exists()), None) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: scripts/bootstrap dev installs it")
    return found


def kubernetes_validate(version: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    executable = tool("kubernetes-validate", Path(sys.executable).with_name("kubernetes-validate"))
    return subprocess.run(
        [executable, "--strict", "--kubernetes-version", version, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def validation_problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    """An error, and also a warning: kubernetes-validate only warns about a kind or apiVersion it
    has no schema for (a typo, a removed API), and exits 0."""
    lines = (result.stdout + result.stderr).splitlines()
    problems = [line for line in lines if line.startswith(("ERROR", "WARN"))]
    if result.returncode != 0 and not problems:
        problems.append(f"exit {result.returncode}: {result.stderr}")
    return problems


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version):
    result = kubernetes_validate(version, *MANIFEST_FILES)

    assert not validation_problems(result), result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(DOCUMENTS), result.stdout


def test_the_validation_refuses_an_unknown_field_and_an_unknown_api(tmp_path):
    api = (K8S / "api.yaml").read_text()
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(api.replace("readinessProbe:", "readinesProbe:"))
    unknown_api = tmp_path / "unknown-api.yaml"
    unknown_api.write_text(api.replace("apiVersion: apps/v1", "apiVersion: apps/v2"))

    for path in (misspelt, unknown_api):
        assert validation_problems(kubernetes_validate(KUBERNETES_VERSIONS[-1], path)), path.name


@pytest.fixture(scope="module")
def checkov() -> dict:
    executable = tool("checkov", ROOT / ".venv" / "checkov" / "bin" / "checkov")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_API", "PRISMA"))}
    arguments = ["-d", str(K8S), "--framework", "kubernetes", "--compact"]
    arguments += ["--skip-download", "--skip-results-upload", "--output", "json"]
    result = subprocess.run(
        [executable, *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env | CHECKOV_OFFLINE,
    )
    assert result.stdout.strip(), f"checkov {shlex.join(arguments)}:\n{result.stderr}"
    report = json.loads(result.stdout)
    (report,) = report if isinstance(report, list) else [report]
    return report


def test_checkov_finds_no_failed_check(checkov):
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
        for c in checkov["results"]["failed_checks"]
    ]

    assert not failed, "\n".join(failed)
    assert checkov["summary"]["parsing_errors"] == 0, checkov["results"]["parsing_errors"]


def test_checkov_scanned_every_workload(checkov):
    scanned = {c["resource"] for c in checkov["results"]["passed_checks"]}

    for workload in WORKLOADS.values():
        assert f"{workload['kind']}.tenantapi.{workload['metadata']['name']}" in scanned


def test_every_skipped_check_is_skipped_in_its_manifest_with_a_reason(checkov):
    for skipped in checkov["results"]["skipped_checks"]:
        assert skipped["check_result"]["suppress_comment"] != "No comment provided", skipped
    for document in DOCUMENTS:
        annotations = document["metadata"].get("annotations", {})
        for key, value in annotations.items():
            if key.startswith("checkov.io/"):
                assert SKIP_ANNOTATION.match(key), key
                assert JUSTIFIED_SKIP.match(value), f"{document['metadata']['name']}: {value}"
    assert not list(K8S.rglob(".checkov.y*ml")), "skips live in the manifests, each with a reason"


def test_every_manifest_is_in_a_kustomization():
    listed = {
        (path.parent / resource).resolve()
        for path in KUSTOMIZATIONS
        for resource in yaml.safe_load(path.read_text())["resources"]
    }

    assert listed == {path.resolve() for path in MANIFEST_FILES}
    # Whatever a release writes there (tag, name, digest), both run the same image.
    images = {
        json.dumps(yaml.safe_load(path.read_text())["images"], sort_keys=True)
        for path in KUSTOMIZATIONS
    }
    assert len(images) == 1, "the migration runs the release's image"


def test_every_pod_runs_as_the_images_unprivileged_user():
    uid = int(re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))
    images = set()
    for name, workload in WORKLOADS.items():
        spec = pod(workload)
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == uid, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for each in spec["containers"]:
            context = each["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert set(each["resources"]) == {"requests", "limits"}, name
            # Python's temporary files need somewhere to go on a read-only root.
            assert CONTAINER_TMP in {m["mountPath"] for m in each["volumeMounts"]}, name
            assert not each["image"].endswith(":latest"), name
            images.add(each["image"])
    assert len(images) == 1, images


def test_secrets_come_from_the_external_secret_only():
    assert not of_kind("Secret"), "no secret is written in the repository"
    secret_keys = {
        line.split("=", 1)[0]
        for line in (K8S / "secret.example.env").read_text().splitlines()
        if line and not line.startswith("#")
    }
    required = {"SECRET_KEY", "DATABASE_URL", "OIDC_RSA_PRIVATE_KEY", "MFA_ENCRYPTION_KEYS"}
    assert required <= secret_keys
    assert not secret_keys & set(CONFIG), "a secret in the ConfigMap"
    for name, workload in WORKLOADS.items():
        for each in pod(workload)["containers"]:
            sources = [s.get("secretRef", {}).get("name") for s in each["envFrom"]]
            assert SECRET_NAME in sources, name


def test_the_config_names_only_variables_the_application_reads():
    # README's table, and the S3 credentials boto3 reads (docs/operations.md).
    docs = (ROOT / "README.md").read_text() + (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", docs))
    secret_example = (K8S / "secret.example.env").read_text()
    keys = set(CONFIG) | set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", secret_example, re.M))

    assert keys - documented == set()
    assert CONFIG["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    # Pods share no filesystem: a worker's archive must be readable by any API pod.
    assert CONFIG["EXPORTS_STORAGE_BACKEND"] == "storages.backends.s3.S3Storage"
    volumes = [v for w in WORKLOADS.values() for v in pod(w).get("volumes", [])]
    assert all(set(v) == {"name", "emptyDir"} for v in volumes), "only pod-private scratch"


def test_the_processes_are_the_ones_compose_runs():
    """Compose's commands, with only Kubernetes' own additions after them (shutdown bounds)."""
    for name, service in [("tenantapi-api", "api"), ("tenantapi-websocket", "ws")]:
        command = COMPOSE[service]["command"]
        assert container(name)["command"][: len(command)] == command, name
    # Beat keeps its schedule on the pod's scratch volume, the root being read-only.
    beat = COMPOSE["beat"]["command"]
    assert container("tenantapi-beat")["command"] == [
        *beat[:-1],
        f"{CONTAINER_TMP}/celerybeat-schedule",
    ]
    assert container("tenantapi-migrate")["command"] == COMPOSE["migrate"]["command"]


def test_the_workers_consume_every_queue_once():
    queues = []
    for name in ("tenantapi-worker", "tenantapi-worker-webhooks"):
        command = container(name)["command"]
        queues += command[command.index("-Q") + 1].split(",")

    assert sorted(queues) == sorted([settings.CELERY_TASK_DEFAULT_QUEUE, settings.WEBHOOKS_QUEUE])
    assert sorted(queues) == sorted([CONFIG["CELERY_TASK_DEFAULT_QUEUE"], CONFIG["WEBHOOKS_QUEUE"]])


def test_the_servers_probe_readiness_liveness_and_start_up():
    allowed_hosts = CONFIG["ALLOWED_HOSTS"].split(",")
    for name in ("tenantapi-api", "tenantapi-websocket"):
        each = container(name)
        paths = {
            probe: each[probe]["httpGet"]["path"]
            for probe in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert paths == {
            "startupProbe": "/healthz",
            "livenessProbe": "/healthz",
            "readinessProbe": "/readyz",
        }, name
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            headers = {h["name"]: h["value"] for h in each[probe]["httpGet"]["httpHeaders"]}
            # The kubelet would send the pod's IP, which ALLOWED_HOSTS refuses.
            assert headers["Host"] in allowed_hosts, (name, probe)
        readiness_bound = float(CONFIG["READINESS_CHECK_TIMEOUT"])
        assert each["readinessProbe"]["timeoutSeconds"] > readiness_bound, name


def test_shutdown_waits_for_the_work_in_flight():
    api = container("tenantapi-api")
    pause = int(api["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = int(api["command"][api["command"].index("--graceful-timeout") + 1])
    assert pod(WORKLOADS["tenantapi-api"])["terminationGracePeriodSeconds"] > pause + graceful

    ws = container("tenantapi-websocket")
    pause = int(ws["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = int(ws["command"][ws["command"].index("--timeout-graceful-shutdown") + 1])
    assert pod(WORKLOADS["tenantapi-websocket"])["terminationGracePeriodSeconds"] > pause + graceful


def test_exactly_one_beat():
    beat = WORKLOADS["tenantapi-beat"]["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"] == {"type": "Recreate"}
    targets = [h["spec"]["scaleTargetRef"]["name"] for h in of_kind("HorizontalPodAutoscaler")]
    assert sorted(targets) == ["tenantapi-api", "tenantapi-websocket"]
    beat_labels = pod_labels()["tenantapi-beat"]
    assert not [
        p for p in of_kind("PodDisruptionBudget") if selects(p["spec"]["selector"], beat_labels)
    ]


def test_every_selector_selects_a_pod():
    labels = pod_labels()
    selectors = [
        (d["metadata"]["name"], d["spec"]["selector"]) for d in of_kind("PodDisruptionBudget")
    ]
    selectors += [
        (d["metadata"]["name"], {"matchLabels": d["spec"]["selector"]}) for d in of_kind("Service")
    ]
    selectors += [
        (d["metadata"]["name"], d["spec"]["podSelector"]) for d in of_kind("NetworkPolicy")
    ]
    for name, selector in selectors:
        assert any(selects(selector, each) for each in labels.values()), name


def test_the_network_is_closed_but_for_what_each_process_needs():
    policies = {d["metadata"]["name"]: d["spec"] for d in of_kind("NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    def allowed(policy: str) -> set[str]:
        selector = policies[policy]["podSelector"]
        return {name for name, labels in pod_labels().items() if selects(selector, labels)}

    internet = {"tenantapi-api", "tenantapi-worker", "tenantapi-worker-webhooks"}
    assert allowed("allow-internet-https") == internet
    assert allowed("allow-ingress-api") == {"tenantapi-api"}
    assert allowed("allow-ingress-websocket") == {"tenantapi-websocket"}
    assert allowed("allow-data-stores") == set(WORKLOADS)
