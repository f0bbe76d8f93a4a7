"""InferenceFleet children: Deployment per revision, one Service, one PDB; pure builders."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeforge.api.fleet_names import endpoint
from kubeforge.api.inferencefleet import InferenceFleetSpec
from kubeforge.builders import inferencefleet as build

NAME, NS, UID = "chat", "serving", "uid-1"


def spec(**overrides: Any) -> InferenceFleetSpec:
    fields: dict[str, Any] = {
        "model": {"name": "llama-3.1-8b", "uri": "s3://models/llama"},
        "image": "vllm/vllm-openai:v0.8.5",
        "resources": {"gpus": 1, "gpuType": "L4", "cpu": "4", "memory": "16Gi"},
    }
    fields.update(overrides)
    return InferenceFleetSpec.model_validate(fields)


def deployment(s: InferenceFleetSpec, replicas: int = 2) -> dict[str, Any]:
    return build.build_deployment(
        s, name=NAME, namespace=NS, uid=UID, rev=build.revision(s), replicas=replicas
    )


class TestRevision:
    @pytest.mark.parametrize(
        "change",
        [
            {"image": "vllm/vllm-openai:v0.9.0"},
            {"args": ["--max-model-len", "8192"]},
            {"command": ["python", "-m", "server"]},
            {"env": [{"name": "A", "value": "1"}]},
            {"resources": {"gpus": 2, "gpuType": "L4"}},
            {"model": {"name": "llama-3.1-70b"}},
            {"port": 9000},
            {"readinessPath": "/ready"},
            {"securityContext": {"runAsUser": 1000}},
        ],
    )
    def test_template_changes_make_a_new_revision(self, change: dict[str, Any]) -> None:
        assert build.revision(spec(**change)) != build.revision(spec())

    @pytest.mark.parametrize(
        "change",
        [
            {"replicas": 7},
            {"autoscaling": {"maxReplicas": 5, "metric": "queueDepth", "target": 3}},
            {"placement": {"spreadZones": False}},
            {"disruption": {"maxUnavailable": "50%"}},
            {"priorityClassName": "serving-high"},
        ],
    )
    def test_other_changes_keep_the_revision(self, change: dict[str, Any]) -> None:
        assert build.revision(spec(**change)) == build.revision(spec())

    def test_deployment_is_named_by_revision(self) -> None:
        s = spec()
        dep = deployment(s)
        rev = build.revision(s)
        assert dep["metadata"]["name"] == f"{NAME}-{rev}"
        assert dep["metadata"]["labels"][build.REVISION_LABEL] == rev
        assert dep["spec"]["selector"]["matchLabels"][build.REVISION_LABEL] == rev


class TestDeployment:
    def test_pod_shape(self) -> None:
        dep = deployment(spec(), replicas=3)
        assert dep["spec"]["replicas"] == 3
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert labels["kubeforge.dev/inferencefleet"] == NAME
        assert labels["app.kubernetes.io/managed-by"] == "kubeforge"
        [container] = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env == {"MODEL_NAME": "llama-3.1-8b", "MODEL_URI": "s3://models/llama", "PORT": "8000"}
        assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["NVIDIA-L4"]
        assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert dep["metadata"]["ownerReferences"][0]["uid"] == UID

    def test_restricted_security_whatever_the_user_sets(self) -> None:
        pod = deployment(spec(securityContext={"runAsUser": 1000, "fsGroup": 2000}))["spec"]["template"][
            "spec"
        ]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 1000
        assert pod["securityContext"]["fsGroup"] == 2000
        assert pod["automountServiceAccountToken"] is False
        container = pod["containers"][0]["securityContext"]
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"] == {"drop": ["ALL"]}

    def test_user_env_cannot_override_managed(self) -> None:
        env = deployment(spec(env=[{"name": "PORT", "value": "1"}, {"name": "X", "value": "y"}]))["spec"][
            "template"
        ]["spec"]["containers"][0]["env"]
        assert [e["name"] for e in env] == ["MODEL_NAME", "PORT", "MODEL_URI", "X"]
        assert next(e for e in env if e["name"] == "PORT")["value"] == "8000"

    @pytest.mark.parametrize(
        ("placement", "expected"),
        [
            (
                {},
                [
                    ("topology.kubernetes.io/zone", "ScheduleAnyway"),
                    ("kubernetes.io/hostname", "ScheduleAnyway"),
                ],
            ),
            (
                {"requireZoneSpread": True},
                [
                    ("topology.kubernetes.io/zone", "DoNotSchedule"),
                    ("kubernetes.io/hostname", "ScheduleAnyway"),
                ],
            ),
            ({"spreadZones": False}, [("kubernetes.io/hostname", "ScheduleAnyway")]),
            ({"spreadZones": False, "spreadNodes": False}, []),
        ],
        ids=["default", "hard-zone", "nodes-only", "off"],
    )
    def test_spread(self, placement: dict[str, Any], expected: list[tuple[str, str]]) -> None:
        pod = deployment(spec(placement=placement))["spec"]["template"]["spec"]
        got = [(c["topologyKey"], c["whenUnsatisfiable"]) for c in pod.get("topologySpreadConstraints", [])]
        assert got == expected
        for constraint in pod.get("topologySpreadConstraints", []):
            # Across every revision of the fleet, not only this Deployment's pods.
            assert constraint["labelSelector"]["matchLabels"] == build.fleet_labels(NAME)

    def test_cpu_only_fleet_has_no_gpu_placement(self) -> None:
        pod = deployment(spec(resources={}))["spec"]["template"]["spec"]
        assert "affinity" not in pod
        assert "tolerations" not in pod


class TestServiceAndPdb:
    def test_service_selects_every_revision(self) -> None:
        svc = build.build_service(spec(port=9000), name=NAME, namespace=NS, uid=UID)
        assert svc["metadata"]["name"] == NAME
        assert svc["spec"]["selector"] == build.fleet_labels(NAME)
        assert build.REVISION_LABEL not in svc["spec"]["selector"]
        assert svc["spec"]["ports"] == [
            {"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}
        ]

    @pytest.mark.parametrize("value", [1, 0, "25%"])
    def test_pdb(self, value: int | str) -> None:
        pdb = build.build_pdb(spec(disruption={"maxUnavailable": value}), name=NAME, namespace=NS, uid=UID)
        assert pdb["spec"]["maxUnavailable"] == value
        assert pdb["spec"]["selector"]["matchLabels"] == build.fleet_labels(NAME)

    def test_endpoint_and_selector(self) -> None:
        assert endpoint(spec(), name=NAME, namespace=NS).to_wire() == {
            "service": "chat.serving.svc",
            "port": 8000,
            "url": "http://chat.serving.svc:8000",
        }
        assert (
            build.selector_string(NAME)
            == "app.kubernetes.io/managed-by=kubeforge,kubeforge.dev/inferencefleet=chat"
        )


@pytest.mark.parametrize(
    ("name", "ok"), [("chat", True), ("a", True), ("1chat", False), ("a" * 64, False), ("chat-", False)]
)
def test_name_problem(name: str, ok: bool) -> None:
    assert (build.name_problem(name) is None) is ok


@given(
    image=st.text(alphabet="abcdefghijklmnopqrstuvwxyz:/.-0123456789", min_size=1, max_size=40),
    args=st.lists(st.text(max_size=10), max_size=4),
)
def test_revision_is_a_deterministic_dns_suffix(image: str, args: list[str]) -> None:
    s = spec(image=image, args=args)
    rev = build.revision(s)
    assert rev == build.revision(spec(image=image, args=list(args)))
    assert len(rev) == 10
    assert all(c in "0123456789abcdef" for c in rev)
