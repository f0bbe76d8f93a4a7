"""Canary traffic through a real Gateway API HTTPRoute (issue 13.6, issue 10.4): the local cluster serves
the pinned Gateway API's standard-channel CRDs, so every weight the operator writes passes the API
server's own schema and CEL rules, as on a production cluster.

- A route that opts in (label `kubeforge.dev/inferencefleet=<fleet>`) gets the fleet's backends weighted
  as the canary's ready pods: each step's share, 100% on the promoted revision, and back to the stable
  revision on an abort, every revision's backend keeping the filter the user put on the fleet's
  backend. Its rules that point elsewhere, or at a Service of the fleet's name in another namespace,
  stay as written.
- A route that does not opt in is never written (its resourceVersion does not move through a whole
  rollout) until its owner opts it in; routes a fleet does not name are never written either.
- The operator never creates or deletes a route: a missing one is reported, a fleet's deletion leaves
  its route where it was.
- A patch the API server refuses (too many backends in a rule) is reported with the server's message.
- The chart's ServiceAccount may read and patch routes, not create, delete or list them, and that is
  enough: the operator run with its token weights a route.

No Prometheus: these rollouts have no analysis, only timed and manual steps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from kubeforge_e2e import Helm, Kubectl, KubectlError, LocalCluster, read_versions, wait_for
from kubeforge_e2e.operator import OperatorProcess
from kubeforge_e2e.workloads import IMAGE, condition, fleet, get_fleet
from test_chart_install import installed, token_kubeconfig
from test_rollout import base_spec, cli, revision_of, rollout_of, steady_fleet, wait_phase

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

OPT_IN = "kubeforge.dev/inferencefleet"
PORT = 8000  # the fleet's default serving port
# A filter on the user's backend: requests to every revision must go through it, the canary's too.
TAG = [
    {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-via", "value": "gw"}]}}
]


# -- helpers -----------------------------------------------------------------------------------------


def httproute(
    name: str,
    rules: list[dict[str, Any]],
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}, "annotations": annotations or {}}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": meta,
        "spec": {"parentRefs": [{"name": "public"}], "hostnames": [f"{name}.example.com"], "rules": rules},
    }


def rule(prefix: str, *backends: dict[str, Any]) -> dict[str, Any]:
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
        "backendRefs": list(backends),
    }


def backend(name: str, port: int = PORT, **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": port, **extra}


def get_route(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    route = kubectl.get("httproute", name, namespace)
    assert route is not None, f"HTTPRoute {namespace}/{name} is gone"
    return dict(route)


def rule_for(route: dict[str, Any], prefix: str) -> dict[str, Any]:
    for r in route["spec"]["rules"]:
        if any(m.get("path", {}).get("value") == prefix for m in r.get("matches") or []):
            return dict(r)
    raise AssertionError(f"no rule for {prefix} in {route['spec']['rules']}")


def weights(route: dict[str, Any], fleet_name: str, prefix: str = "/v1") -> dict[str, int]:
    """revision -> weight of the rule's backends that are the fleet's revision Services; a backend of any
    other name (the fleet's own Service as the user wrote it) shows under its own name."""
    out: dict[str, int] = {}
    for ref in rule_for(route, prefix)["backendRefs"]:
        name = str(ref["name"])
        key = name.removeprefix(f"{fleet_name}-") if name.startswith(f"{fleet_name}-") else name
        out[key] = int(ref.get("weight", 1))
    return out


def wait_weights(
    kubectl: Kubectl, namespace: str, route: str, fleet_name: str, want: dict[str, int], seen: list[Any]
) -> dict[str, Any]:
    """Poll the route until the fleet's backends carry `want`; every distinct split on the way is
    appended to `seen`."""

    def reached() -> dict[str, Any] | None:
        obj = get_route(kubectl, namespace, route)
        split = weights(obj, fleet_name)
        if not seen or seen[-1] != split:
            seen.append(split)
        return obj if split == want else None

    return wait_for(reached, timeout=120, interval=0.25, description=f"HTTPRoute {route} at {want}")


def routed(kubectl: Kubectl, namespace: str, name: str, status: str, reason: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        cond = condition(get_fleet(kubectl, namespace, name), "TrafficRouted")
        return cond if cond and (cond["status"], cond["reason"]) == (status, reason) else None

    return wait_for(reached, timeout=90, interval=0.5, description=f"{name} TrafficRouted {reason}")


def routes_in(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """name -> uid of every HTTPRoute in the namespace."""
    items = kubectl.json("get", "httproutes", "-n", namespace, "-o", "json")["items"]
    return {r["metadata"]["name"]: r["metadata"]["uid"] for r in items}


def resource_versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    items = kubectl.json("get", "httproutes", "-n", namespace, "-o", "json")["items"]
    return {r["metadata"]["name"]: r["metadata"]["resourceVersion"] for r in items}


# -- tests -------------------------------------------------------------------------------------------


def test_the_api_server_validates_routes(kubectl: Kubectl, namespace: str) -> None:
    """The CRDs are the real ones: their CEL rules refuse what the Gateway API refuses."""
    crd = kubectl.get("crd", "httproutes.gateway.networking.k8s.io")
    assert crd is not None
    bundle = crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"]
    assert bundle == read_versions()["GATEWAY_API_VERSION"]
    with pytest.raises(KubectlError) as info:
        kubectl.apply(httproute("no-port", [rule("/", {"name": "chat"})]), namespace)
    assert "Must have port for Service reference" in str(info.value)
    with pytest.raises(KubectlError) as info:
        kubectl.apply(httproute("heavy", [rule("/", backend("chat", weight=1_000_001))]), namespace)
    assert "weight" in str(info.value)
    assert routes_in(kubectl, namespace) == {}


@pytest.mark.usefixtures("fleet_operator")
def test_canary_weights_follow_the_steps_promotion_and_abort(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str
) -> None:
    name = "chat"
    elsewhere = f"{namespace}-other"  # a Service called `chat` there is another team's
    kubectl.apply(
        httproute(
            name,
            [
                rule("/v1", backend(name, filters=TAG)),
                rule("/docs", backend("docs", 80)),
                rule("/mirror", backend(name, namespace=elsewhere)),
            ],
            labels={OPT_IN: name},
        ),
        namespace,
    )
    # Routes the fleet does not name, opted in or not, pointing at its Service: never written.
    kubectl.apply(httproute("chat-mirror", [rule("/v1", backend(name))], labels={OPT_IN: name}), namespace)
    kubectl.apply(httproute("team-b", [rule("/v1", backend(name))]), namespace)
    created = routes_in(kubectl, namespace)
    before = resource_versions(kubectl, namespace)
    written = get_route(kubectl, namespace, name)
    untouched = {p: rule_for(written, p) for p in ("/docs", "/mirror")}

    body = base_spec(
        rollout={"steps": [{"weight": 25, "pauseSeconds": 8}, {"weight": 50}], "httpRoute": {"name": name}}
    )
    v1 = steady_fleet(kubectl, None, namespace, name, body)
    seen: list[dict[str, int]] = []
    wait_weights(kubectl, namespace, name, name, {v1: 100}, seen)
    assert routed(kubectl, namespace, name, "True", "WeightsSet")["message"].endswith(f"{v1}=100%")

    # v2: 25% (one of four replicas; the stable keeps three), then the manual 50% step.
    v2_body = {**body, "image": IMAGE + "-v2"}
    kubectl.apply(fleet(name, **v2_body), namespace)
    v2 = revision_of(fleet(name, **v2_body)["spec"])
    wait_weights(kubectl, namespace, name, name, {v1: 75, v2: 25}, seen)
    route = wait_weights(kubectl, namespace, name, name, {v1: 50, v2: 50}, seen)
    ro = rollout_of(kubectl, namespace, name)
    assert (ro["phase"], ro["canaryRevision"], ro["canaryWeight"]) == ("Paused", v2, 50)
    for p, r in untouched.items():
        assert rule_for(route, p) == r, f"rule {p} was rewritten"
    assert [ref.get("filters") for ref in rule_for(route, "/v1")["backendRefs"]] == [TAG, TAG]
    for split in seen:
        assert sum(split.values()) == 100, seen
        assert set(split) <= {v1, v2}, seen

    # Promotion: all of it on v2, the old revision's backend gone.
    cli(kubectl, cluster, namespace, "rollout", "promote", name)
    wait_phase(kubectl, namespace, name, "Promoted", stableRevision=v2)
    wait_weights(kubectl, namespace, name, name, {v2: 100}, seen)

    # Abort of v3 at its manual step: v2 gets all of it back.
    v3_body = {**body, "image": IMAGE + "-v3"}
    kubectl.apply(fleet(name, **v3_body), namespace)
    v3 = revision_of(fleet(name, **v3_body)["spec"])
    wait_weights(kubectl, namespace, name, name, {v2: 50, v3: 50}, seen)
    cli(kubectl, cluster, namespace, "rollout", "abort", name)
    wait_phase(kubectl, namespace, name, "Aborted", canaryRevision=v3)
    route = wait_weights(kubectl, namespace, name, name, {v2: 100}, seen)
    print(f"\nHTTPRoute {name} splits, in order: {seen}")
    # The canary's weight went to 0 at once, not pod by pod as its replicas drained.
    assert seen[-2:] == [{v2: 50, v3: 50}, {v2: 100}], seen

    # Converged: two safety-net resyncs (5 s each in these tests) write nothing more to the route, the
    # API server's defaults (group, kind) included.
    version = route["metadata"]["resourceVersion"]
    time.sleep(11)
    route = get_route(kubectl, namespace, name)
    assert route["metadata"]["resourceVersion"] == version, "a converged route was written again"

    for p, r in untouched.items():
        assert rule_for(route, p) == r, f"rule {p} was rewritten"
    assert [ref.get("filters") for ref in rule_for(route, "/v1")["backendRefs"]] == [TAG]
    assert not route["metadata"].get("ownerReferences"), "the route stays the user's"
    after = resource_versions(kubectl, namespace)
    assert after["chat-mirror"] == before["chat-mirror"]
    assert after["team-b"] == before["team-b"]

    # Deleting the fleet deletes its children, never the route.
    kubectl("delete", "inferencefleet", name, "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: not kubectl.json("get", "services", "-n", namespace, "-o", "json")["items"],
        timeout=60,
        description="the fleet's Services garbage-collected",
    )
    assert routes_in(kubectl, namespace) == created


@pytest.mark.usefixtures("fleet_operator")
def test_a_route_that_does_not_opt_in_is_never_written(kubectl: Kubectl, namespace: str) -> None:
    name = "guarded"
    # Opted in, but for another fleet: the owner of the route let `other` set it, not `guarded`.
    kubectl.apply(httproute(name, [rule("/v1", backend(name))], labels={OPT_IN: "other"}), namespace)
    version = get_route(kubectl, namespace, name)["metadata"]["resourceVersion"]

    body = base_spec(
        replicas=2, rollout={"steps": [{"weight": 50, "pauseSeconds": 2}], "httpRoute": {"name": name}}
    )
    steady_fleet(kubectl, None, namespace, name, body)
    cond = routed(kubectl, namespace, name, "False", "HTTPRouteUnreadable")
    assert f"{OPT_IN}={name}" in cond["message"], cond

    # A whole rollout later, the route has not been written once.
    v2_body = {**body, "image": IMAGE + "-v2"}
    kubectl.apply(fleet(name, **v2_body), namespace)
    v2 = revision_of(fleet(name, **v2_body)["spec"])
    wait_phase(kubectl, namespace, name, "Promoted", stableRevision=v2, timeout=120)
    route = get_route(kubectl, namespace, name)
    assert route["metadata"]["resourceVersion"] == version
    assert weights(route, name) == {name: 1}

    # Its owner opts in (an annotation does as well as a label): the next pass sets the weights.
    kubectl("annotate", "httproute", name, "-n", namespace, f"{OPT_IN}={name}")
    wait_weights(kubectl, namespace, name, name, {v2: 100}, [])
    routed(kubectl, namespace, name, "True", "WeightsSet")


@pytest.mark.usefixtures("fleet_operator")
def test_a_missing_route_is_reported_not_created(kubectl: Kubectl, namespace: str) -> None:
    name = "lonely"
    body = base_spec(replicas=1, rollout={"httpRoute": {"name": name}})
    steady_fleet(kubectl, None, namespace, name, body)
    cond = routed(kubectl, namespace, name, "False", "HTTPRouteNotFound")
    assert name in cond["message"], cond
    # Two safety-net resyncs (5 s each in these tests) later, still no route: the operator made none.
    time.sleep(11)
    assert routes_in(kubectl, namespace) == {}
    # The user creates it, opted in: the operator finds it and weights it.
    kubectl.apply(httproute(name, [rule("/v1", backend(name))], labels={OPT_IN: name}), namespace)
    stable = rollout_of(kubectl, namespace, name)["stableRevision"]
    wait_weights(kubectl, namespace, name, name, {stable: 100}, [])


@pytest.mark.usefixtures("fleet_operator")
def test_a_patch_the_api_server_refuses_is_reported_and_the_route_kept(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str
) -> None:
    """The Gateway API allows 16 backends in a rule. A rule with 15 of another team's backends and the
    fleet's has room for one revision, not two: mid-rollout the API server refuses the operator's patch,
    the fleet says so with the server's message, the route stays as it was, and the rollout goes on by
    ready replicas; after the promotion the route is weighted again."""
    name = "crowded"
    shards = [backend(f"shard-{i}", 80) for i in range(15)]
    kubectl.apply(httproute(name, [rule("/v1", *shards, backend(name))], labels={OPT_IN: name}), namespace)
    body = base_spec(replicas=2, rollout={"steps": [{"weight": 50}], "httpRoute": {"name": name}})
    v1 = steady_fleet(kubectl, None, namespace, name, body)
    route = wait_weights(
        kubectl, namespace, name, name, {**{f"shard-{i}": 1 for i in range(15)}, v1: 100}, []
    )
    version = route["metadata"]["resourceVersion"]

    v2_body = {**body, "image": IMAGE + "-v2"}
    kubectl.apply(fleet(name, **v2_body), namespace)
    v2 = revision_of(fleet(name, **v2_body)["spec"])
    cond = routed(kubectl, namespace, name, "False", "HTTPRoutePatchFailed")
    assert "must have at most 16 items" in cond["message"], cond
    ro = wait_phase(kubectl, namespace, name, "Paused", canaryRevision=v2, canaryWeight=50)
    assert "promote" in ro.get("message", ""), ro
    assert get_route(kubectl, namespace, name)["metadata"]["resourceVersion"] == version

    cli(kubectl, cluster, namespace, "rollout", "promote", name)
    wait_phase(kubectl, namespace, name, "Promoted", stableRevision=v2)
    wait_weights(kubectl, namespace, name, name, {**{f"shard-{i}": 1 for i in range(15)}, v2: 100}, [])
    routed(kubectl, namespace, name, "True", "WeightsSet")


def test_the_charts_identity_may_weight_a_route_but_not_create_or_delete_one(
    cluster: LocalCluster, kubectl: Kubectl, helm: Helm, namespace: str, crds: None, tmp_path: Path
) -> None:
    with installed(helm, namespace) as release:
        sa = f"{release}-kubeforge"
        for verb, allowed in (
            ("get", "yes"),
            ("patch", "yes"),
            ("create", "no"),
            ("delete", "no"),
            ("list", "no"),
        ):
            can = kubectl(
                "auth",
                "can-i",
                verb,
                "httproutes.gateway.networking.k8s.io",
                "-n",
                namespace,
                f"--as=system:serviceaccount:{namespace}:{sa}",
                check=False,
            )
            assert can.stdout.strip() == allowed, (verb, can.stdout, can.stderr)

        name = "charted"
        kubectl.apply(httproute(name, [rule("/v1", backend(name))], labels={OPT_IN: name}), namespace)
        kubeconfig = token_kubeconfig(cluster, kubectl, namespace, sa, tmp_path / "kubeconfig")
        operator = OperatorProcess(
            kubeconfig, tmp_path / "operator.log", extra_args=["--namespace", namespace]
        )
        operator.start()
        try:
            # Not steady_fleet: the chart's own Deployment shares the namespace.
            kubectl.apply(
                fleet(name, **base_spec(replicas=1, rollout={"httpRoute": {"name": name}})), namespace
            )
            stable = wait_phase(kubectl, namespace, name, "Promoted")["stableRevision"]
            wait_weights(kubectl, namespace, name, name, {stable: 100}, [])
            routed(kubectl, namespace, name, "True", "WeightsSet")
            log = operator.tail(2000)
            assert "Forbidden" not in log, log
            assert " 403" not in log, log
        finally:
            operator.stop()
