"""The alert rules (charts/kubeforge/files/kubeforge.rules.yaml): `promtool check rules`, the unit tests
in tests/rules/ with `promtool test rules`, each alert tested firing and not firing, only metrics the
operator or its exporters publish, and the chart's PrometheusRule carrying the same rules.

promtool comes with Debian's prometheus package (`make system-deps`); without it these tests fail
rather than skip, as the e2e Prometheus tests do.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from test_chart import CHART, helm, helm_env, only, render  # noqa: F401 (fixtures)
from test_dashboard import exporter_metrics, names, operator_metrics

ROOT = Path(__file__).resolve().parents[1]
RULES = CHART / "files" / "kubeforge.rules.yaml"
RULE_TESTS = ROOT / "tests" / "rules" / "kubeforge.rules.test.yaml"

# What the issue asks an operator of kubeforge to be told about, each by one alert or more.
EXPECTED_ALERTS = {
    "KubeforgeOperatorDown",
    "KubeforgeNoLeader",
    "KubeforgeReconcileErrors",
    "KubeforgeWorkQueueBackingUp",
    "KubeforgeWorkQueueSlow",
    "KubeforgeFleetLatencyOverTarget",
    "KubeforgeFleetCapacityLimited",
    "KubeforgeFleetMetricsUnavailable",
    "KubeforgeRolloutRolledBack",
    "KubeforgeTrainingRestartsClimbing",
    "KubeforgeGPUsIdle",
}


@pytest.fixture(scope="session")
def promtool() -> Path:
    found = shutil.which("promtool")
    assert found, "no promtool: run `make system-deps` (Debian's prometheus package ships it)"
    return Path(found)


def run(promtool: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def rules(groups: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in groups["groups"]:
        yield from group["rules"]


def test_rules_file_passes_promtool_check(promtool: Path) -> None:
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_rule_unit_tests_pass(promtool: Path) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    defined = {rule["alert"] for rule in rules(yaml.safe_load(RULES.read_text()))}
    assert defined == EXPECTED_ALERTS
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert firing == EXPECTED_ALERTS, f"never tested firing: {EXPECTED_ALERTS - firing}"
    assert silent == EXPECTED_ALERTS, f"never tested silent: {EXPECTED_ALERTS - silent}"


@pytest.mark.parametrize("rule", list(rules(yaml.safe_load(RULES.read_text()))), ids=lambda r: r["alert"])
def test_rules_name_only_published_metrics(rule: dict[str, Any]) -> None:
    unknown = names(rule["expr"]) - operator_metrics() - exporter_metrics() - {"up"}
    assert not unknown, f"{rule['alert']}: {sorted(unknown)} are not published"
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]


def test_prometheus_rule_is_off_by_default(helm: Path, helm_env: dict[str, str]) -> None:  # noqa: F811
    assert not [d for d in render(helm, helm_env) if d["kind"] == "PrometheusRule"]


def test_prometheus_rule_carries_the_rules_file_with_the_operators_job(
    helm: Path,  # noqa: F811
    helm_env: dict[str, str],  # noqa: F811
    promtool: Path,
    tmp_path: Path,
) -> None:
    plain = yaml.safe_load(RULES.read_text())
    default = only(render(helm, helm_env, "monitoring.prometheusRule.enabled=true"), "PrometheusRule")
    assert default["spec"] == plain  # the ServiceMonitor's job is the chart name, kubeforge
    docs = render(
        helm,
        helm_env,
        "monitoring.prometheusRule.enabled=true",
        "monitoring.job=kubeforge-metrics",
        "monitoring.prometheusRule.labels.release=kube-prometheus-stack",
    )
    rendered = only(docs, "PrometheusRule")
    assert rendered["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    text = yaml.safe_dump(rendered["spec"])
    assert 'job="kubeforge"' not in text
    assert text.count('job="kubeforge-metrics"') == yaml.safe_dump(plain).count('job="kubeforge"') > 0
    # What the chart renders is still a rules file promtool accepts.
    path = tmp_path / "rendered.rules.yaml"
    path.write_text(text)
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_job_values_that_would_break_the_selectors_are_refused(
    helm: Path,  # noqa: F811
    helm_env: dict[str, str],  # noqa: F811
) -> None:
    from test_chart import run_helm, set_args, template_cmd

    result = run_helm(helm, helm_env, *template_cmd(*set_args(['monitoring.job=a"b'])))
    assert result.returncode != 0
    assert "monitoring" in result.stderr
