"""What a fleet costs in API writes on the local cluster, from the operator's own request counter
(`kubeforge_api_requests_total`): a new one-replica fleet to Ready, then its image change with the
default strategy until the old revision is gone, each at most 12 writes, and nothing once converged."""

from __future__ import annotations

import time

import pytest

from kubeforge_e2e import Kubectl, promtext, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import IMAGE, fleet, get_fleet, is_true, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def operator(fleet_operator: OperatorProcess) -> OperatorProcess:
    """This module's operator: the operator alone, without Prometheus (conftest's `fleet_operator`)."""
    return fleet_operator


READS = frozenset({"get", "list", "watch"})
TARGET = 12
"""Issue target: a one-replica fleet's image change with the default strategy, children, status
transitions and Events in all."""


def writes(process: OperatorProcess) -> dict[tuple[str, ...], float]:
    """The operator's writes so far, by verb and resource (Events included: they are writes too)."""
    samples = promtext.parse(process.metrics(), ["kubeforge_api_requests_total"])
    return {k: v for k, v in promtext.sum_by(samples, "verb", "resource").items() if k[0] not in READS}


def since(process: OperatorProcess, before: dict[tuple[str, ...], float]) -> dict[str, int]:
    return {f"{v} {r}": int(n) for (v, r), n in promtext.delta(writes(process), before).items() if n}


def test_a_fleet_and_its_image_change_cost_at_most_twelve_writes_each(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    before = writes(operator)
    kubectl.apply(fleet("chat", replicas=1, resources={"gpus": 1, "gpuType": "L4"}), namespace)
    wait_ready(kubectl, namespace, "chat")
    time.sleep(3)  # the passes the last pod and status changes bring
    created = since(operator, before)
    assert sum(created.values()) <= TARGET, created

    before = writes(operator)
    old = get_fleet(kubectl, namespace, "chat")["status"]["revision"]
    kubectl(
        "patch",
        "inferencefleet",
        "chat",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        f'{{"spec": {{"image": "{IMAGE}-v2"}}}}',
    )

    def rolled() -> bool:
        obj = get_fleet(kubectl, namespace, "chat")
        deployments = kubectl.json("get", "deployments", "-n", namespace)["items"]
        return obj["status"]["revision"] != old and is_true(obj, "Ready") and len(deployments) == 1

    wait_for(rolled, timeout=120, interval=0.5, description="the new revision Ready, the old one gone")
    time.sleep(3)
    changed = since(operator, before)
    assert sum(changed.values()) <= TARGET, changed
    assert changed.get("delete deployments") == 1, changed

    before = writes(operator)
    time.sleep(5)
    assert since(operator, before) == {}, "a converged fleet writes nothing"
