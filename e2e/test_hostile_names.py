"""A tenant in bad faith against child names, on the real API server: names that no child can carry,
and a TrainingJob and an InferenceFleet whose children want the same Service name.

- A TrainingJob's headless Service takes the TrainingJob's own name, and a custom resource may be
  named like a DNS subdomain (`a.b`, up to 253 characters), which no Service can be: the CRD refuses
  those names. The longest name it admits gets its children, or a condition saying why, not a
  reconcile that fails on every pass, and does not hold up a TrainingJob beside it.
- A TrainingJob `clash` and a fleet `clash` both want the Service `clash`: whoever comes second must
  report a `Conflict` and leave the first one's Service as it was."""

from __future__ import annotations

import time

import pytest

from kubeforge_e2e import Kubectl, KubectlError, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import condition, fleet
from test_crd_validation import operator as operator  # a fixture: the operator on the test's namespace
from test_crd_validation import trainingjob

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


REFUSED_NAMES = {"dotted": "a.b", "long": "n" * 64, "long-dotted": ".".join(["x" * 60] * 4)}
"""Names the CRD admits for a custom resource in general but no headless Service can carry."""
LONGEST = "t" * 52
"""The longest name the CRD admits: its pods' hostnames `<name>-a<attempt>-<index>` must still fit."""


def _reason(kubectl: Kubectl, kind: str, name: str, namespace: str) -> tuple[str, str] | None:
    ready = condition(kubectl.get(kind, name, namespace), "Ready")
    return None if ready is None else (ready["reason"], ready["message"])


@pytest.mark.parametrize("name", REFUSED_NAMES.values(), ids=REFUSED_NAMES.keys())
def test_a_trainingjob_name_no_service_can_carry_is_refused_by_the_api_server(
    kubectl: Kubectl, namespace: str, crds: None, name: str
) -> None:
    with pytest.raises(KubectlError, match=r"metadata\.name must be"):
        kubectl.apply(trainingjob(name), namespace)


def test_the_longest_trainingjob_name_gets_a_condition_not_a_failing_loop(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    kubectl.apply(trainingjob(LONGEST), namespace)
    kubectl.apply(trainingjob("fine"), namespace)
    reason = wait_for(
        lambda: _reason(kubectl, "trainingjob", LONGEST, namespace),
        timeout=60,
        description="the 52-character TrainingJob gets a Ready condition",
    )
    fine = wait_for(
        lambda: _reason(kubectl, "trainingjob", "fine", namespace),
        timeout=60,
        description="the well-named TrainingJob beside it is reconciled",
    )
    assert fine[0] != "InvalidSpec", fine
    # Either its Job exists or it says why not; never a pass that fails again and again.
    jobs = kubectl.json("get", "jobs", "-n", namespace)["items"]
    assert reason[0] == "InvalidSpec" or any(j["metadata"]["name"].startswith(LONGEST) for j in jobs), (
        reason,
        [j["metadata"]["name"] for j in jobs],
    )
    time.sleep(5)  # `--resync-seconds 1`: five passes of each
    assert operator.tail(400).count("reconcile failed") == 0, operator.tail(60)


def test_a_trainingjob_and_a_fleet_of_the_same_name_do_not_take_each_others_service(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    kubectl.apply(trainingjob("clash"), namespace)
    service = wait_for(
        lambda: kubectl.get("service", "clash", namespace),
        timeout=60,
        description="the TrainingJob's Service",
    )
    kubectl.apply(fleet("clash"), namespace)
    conflict = wait_for(
        lambda: condition(kubectl.get("inferencefleet", "clash", namespace), "Conflict"),
        timeout=60,
        description="the fleet reports the name conflict",
    )
    assert conflict["status"] == "True", conflict
    assert "clash" in conflict["message"], conflict
    time.sleep(3)
    after = kubectl.get("service", "clash", namespace)
    assert after["metadata"]["resourceVersion"] == service["metadata"]["resourceVersion"]
    assert [r["kind"] for r in after["metadata"]["ownerReferences"]] == ["TrainingJob"]
