"""deploy/prometheus as Prometheus reads it: the configuration and rules pass `promtool check`, the
rules' unit tests pass `promtool test rules`, and every alert has been seen both firing and
staying quiet in those tests before it ever pages anyone."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
# Where compose mounts the metrics token (deploy/prometheus/prometheus.yml); promtool checks that
# credential files exist.
TOKEN_FILE = "/run/secrets/metrics_token"


def promtool(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (scripts/test does)")
    return subprocess.run(
        ["promtool", *arguments], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def assert_succeeds(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args}:\n{result.stdout}\n{result.stderr}"


def alerts() -> dict[str, dict]:
    return {
        rule["alert"]: rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_the_configuration_is_valid(tmp_path):
    # A copy whose token file exists, as it does where compose mounts it.
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, copy)
    token = tmp_path / "metrics-token"
    token.write_text("token")
    config = copy / "prometheus.yml"
    config.write_text(config.read_text().replace(TOKEN_FILE, str(token)))

    assert_succeeds(promtool("check", "config", str(config), cwd=copy))


def test_the_rules_are_valid():
    assert RULE_FILES
    assert_succeeds(promtool("check", "rules", *map(str, RULE_FILES), cwd=PROMETHEUS))


def test_the_rules_pass_their_unit_tests():
    assert RULE_TESTS
    names = [path.name for path in RULE_TESTS]
    result = promtool("test", "rules", *names, cwd=PROMETHEUS / "tests")

    assert_succeeds(result)
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_every_alert_is_tested_firing_and_quiet():
    cases: dict[str, dict[str, int]] = {name: {"firing": 0, "quiet": 0} for name in alerts()}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                outcome = "firing" if case.get("exp_alerts") else "quiet"
                cases[case["alertname"]][outcome] += 1

    untested = {name: seen for name, seen in cases.items() if 0 in seen.values()}
    assert not untested, f"alerts without a firing and a quiet case: {untested}"


def test_every_alert_says_how_bad_what_and_what_to_do():
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"].strip(), name
        # A description an operator paged at night can act on, not a restated expression.
        assert len(rule["annotations"]["description"].split()) >= 25, name
