"""A fleet reads only its own namespace's metrics, whatever its queries say.

A real Prometheus scrapes series of two namespaces from the load simulator: the test's namespace
(`vllm:num_requests_waiting` 0.5) and another tenant's (vLLM's fixture page, `vllm:num_requests_waiting`
2). Fleets in the test's namespace try five ways to read the other's through `autoscaling.query`. Each
attack, sent to Prometheus as written, does read the other tenant's series (checked first, so the test
cannot pass on a query that reads nothing anyway); through the operator, none of it reaches the fleet's
status, Events, log or /metrics. A query that cannot be confined is refused with a condition and an
Event saying why."""

from __future__ import annotations

import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from kubeforge_e2e import Kubectl, wait_for
from kubeforge_e2e.loadsim import LoadSimulator
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.prometheus import PrometheusProcess
from kubeforge_e2e.workloads import condition, fleet, get_fleet

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(300)]

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "exposition"
OURS = 0.5
THEIRS = 2.0  # vllm.prom's vllm:num_requests_waiting
W = "vllm:num_requests_waiting"


def attacks(other: str) -> dict[str, str]:
    return {
        "plain": f'sum({W}{{namespace="{other}"}})',
        "regex": f'sum({W}{{namespace=~".+"}})',
        "or": f'sum({W}{{namespace="nowhere"}}) or sum({W}{{namespace="{other}"}})',
        "subquery": f'max_over_time(sum({W}{{namespace="{other}"}})[30s:1s])',
        "label-replace": f'sum(label_replace({W}{{namespace="{other}"}}, "namespace", "x", "", ""))',
    }


AUTOSCALING: dict[str, Any] = {
    "minReplicas": 1,
    "maxReplicas": 2,
    "target": 100,
    "intervalSeconds": 1,
    "stableWindowSeconds": 5,
    "panicWindowSeconds": 2,
}


def record(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_fleet(kubectl, namespace, name).get("status", {}).get("autoscaler") or {})


def events(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    return list(kubectl.json("get", "events", "-n", namespace, "-o", "json")["items"])


def test_a_fleet_cannot_read_another_namespaces_metrics(
    kubectl: Kubectl,
    namespace: str,
    loadsim: LoadSimulator,
    prometheus: PrometheusProcess,
    operator: OperatorProcess,
) -> None:
    other = f"{namespace}-other"
    loadsim.replay(
        "other-tenant",
        (FIXTURES / "vllm.prom").read_text(),
        {
            "namespace": other,
            "pod": "chat-0123456789-7d9f8c6b5-x2x9k",
            "kubeforge_dev_inferencefleet": "chat",
        },
    )
    loadsim.replay(
        "this-tenant",
        f'# TYPE {W} gauge\n{W}{{engine="0"}} {OURS}\n',
        {"namespace": namespace, "pod": "own-0123456789-7d9f8c6b5-q2w3e"},
    )
    try:
        tried = attacks(other)

        # Each attack, unconfined, reads the other tenant's series.
        def reads_theirs(query: str) -> bool:
            return (prometheus.query(query) or 0) >= THEIRS

        for name, query in tried.items():
            wait_for(
                partial(reads_theirs, query),
                timeout=30,
                interval=0.5,
                description=f"attack {name} reading {other} directly from Prometheus",
            )

        fleets = {f"attack-{name}": query for name, query in tried.items()}
        fleets["control"] = f"sum({W})"  # no namespace written: reads this namespace's own series
        fleets["refused"] = f'sum({W}{{namespace="{other}" or namespace="{namespace}"}})'
        for name, query in fleets.items():
            kubectl.apply(fleet(name, autoscaling={**AUTOSCALING, "query": query}), namespace)

        # The control shows the pipeline reads metrics at all, so "no value" below means confined.
        wait_for(
            lambda: record(kubectl, namespace, "control").get("metricValue") == pytest.approx(OURS),
            timeout=90,
            interval=1,
            description="the control fleet reading its own namespace's series",
        )

        def evaluated(name: str) -> bool:
            obj = get_fleet(kubectl, namespace, name)
            return condition(obj, "MetricsUnavailable") is not None and bool(record(kubectl, namespace, name))

        for name in fleets:
            wait_for(partial(evaluated, name), timeout=60, interval=1, description=f"{name} evaluated")

        leaked = (f"query {THEIRS:g} ", f"query {THEIRS + OURS:g} ")
        for _ in range(5):  # several evaluations (1 s apart) of every attack
            for name in tried:
                obj = get_fleet(kubectl, namespace, f"attack-{name}")
                auto = obj["status"]["autoscaler"]
                # Only the regex attack's own-namespace half can match anything: this namespace's 0.5.
                allowed = {None, OURS} if name == "regex" else {None}
                assert auto.get("metricValue") in allowed, (name, auto)
                assert auto.get("panicValue") in allowed, (name, auto)
                assert not any(text in auto.get("message", "") for text in leaked), (name, auto)
                if name != "regex":
                    metrics = condition(obj, "MetricsUnavailable")
                    assert metrics is not None
                    assert metrics["status"] == "True", (name, metrics)
            time.sleep(1)

        refused = get_fleet(kubectl, namespace, "refused")
        metrics = condition(refused, "MetricsUnavailable")
        assert metrics is not None
        assert (metrics["status"], metrics["reason"]) == ("True", "QueryRefused")
        assert "autoscaling.query refused" in metrics["message"]
        assert "cannot be confined" in metrics["message"]
        assert refused["status"]["autoscaler"].get("metricValue") is None

        wait_for(
            lambda: any(
                e["reason"] == "QueryRefused" and e["involvedObject"]["name"] == "refused"
                for e in events(kubectl, namespace)
            ),
            timeout=30,
            interval=1,
            description="a QueryRefused Warning Event on the refused fleet",
        )
        # Nothing the other tenant's series hold shows up in this namespace's Events.
        for event in events(kubectl, namespace):
            assert not any(text in event.get("message", "") for text in leaked), event
        # ... nor in the operator's log or its own /metrics.
        log = operator.log_path.read_text(errors="replace")
        assert not any(text in log for text in leaked)
        with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
            exposition = response.read().decode()
        assert other not in exposition
    finally:
        loadsim.stop_replay("other-tenant")
        loadsim.stop_replay("this-tenant")
