"""The operator's trust boundary, without a cluster: what it writes over, whose pods it counts, which proxy
its credentials go through, which PriorityClasses it accepts. The API server's side of each is in
e2e/test_tenancy.py."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from aiohttp import web
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from kubeforge.controllers.ownership import CONFLICT, conflict_conditions, without_conflict
from kubeforge.kube.client import Kube, NotOursError
from kubeforge.kube.config import load_access

Obj = dict[str, Any]
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _service(name: str, owner_uid: str | None) -> Obj:
    meta: Obj = {"name": name, "namespace": "ns"}
    if owner_uid is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "kubeforge.dev/v1alpha1",
                "kind": "InferenceFleet",
                "name": name,
                "uid": owner_uid,
                "controller": True,
            }
        ]
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": [{"port": 80}]}}


class FakeServer:
    """The lightkube calls `apply_if_changed` makes, answered like an API server holding `objects`."""

    def __init__(self, objects: dict[str, Obj]) -> None:
        self.objects = objects
        self.created: list[Obj] = []
        self.applied: list[tuple[Obj, bool]] = []

    async def create(self, obj: Any, field_manager: str) -> Obj:
        body: Obj = json.loads(json.dumps(dict(obj)))
        name = body["metadata"]["name"]
        if name in self.objects:
            raise ApiError(status=Status(code=409, reason="AlreadyExists", message=f"{name} exists"))
        body["metadata"]["generation"] = 1
        self.objects[name] = body
        self.created.append(body)
        return body

    async def get(self, res: Any, name: str, namespace: str | None = None) -> Obj:
        if name not in self.objects:
            raise ApiError(status=Status(code=404, reason="NotFound", message=f"{name} not found"))
        return copy.deepcopy(self.objects[name])

    async def apply(self, obj: Any, field_manager: str, force: bool) -> Obj:
        body: Obj = json.loads(json.dumps(dict(obj)))
        self.applied.append((body, force))
        body["metadata"]["generation"] = 1
        self.objects[body["metadata"]["name"]] = body
        return body


def fake_kube(objects: dict[str, Obj]) -> tuple[Kube, FakeServer]:
    kube = object.__new__(Kube)
    server = FakeServer(objects)
    kube._client = server  # type: ignore[assignment]
    kube.field_manager = "kubeforge"
    kube.observer = None
    kube._generations = {}
    return kube, server


# -- 10.4: never adopt what it did not create ------------------------------------------------------


@pytest.mark.parametrize(
    "theirs",
    [None, "someone-else"],
    ids=["a user's own Service, no owner", "a Service another owner controls"],
)
async def test_a_foreign_object_missing_from_the_cache_is_left_untouched(theirs: str | None) -> None:
    """The caches select children by the managed-by label, so a foreign object is never in them: before,
    the operator force-applied over it. Now it creates, and a taken name ends in NotOursError."""
    foreign = _service("chat", theirs)
    kube, server = fake_kube({"chat": copy.deepcopy(foreign)})
    with pytest.raises(NotOursError, match="not controlled by this object"):
        await kube.apply_if_changed(_service("chat", "fleet-uid"), None)
    assert server.applied == [], "a forced apply would have taken the object over"
    assert server.objects["chat"] == foreign


async def test_a_new_child_is_created_and_ours_out_of_the_cache_is_applied_again() -> None:
    kube, server = fake_kube({})
    assert await kube.apply_if_changed(_service("chat", "fleet-uid"), None) is not None
    assert [c["metadata"]["name"] for c in server.created] == ["chat"]
    assert server.applied == []
    # Our own child whose managed-by label someone removed: not in the cache, but ours, so applied.
    kube2, server2 = fake_kube({"chat": _service("chat", "fleet-uid")})
    assert await kube2.apply_if_changed(_service("chat", "fleet-uid"), None) is not None
    assert len(server2.applied) == 1


def test_a_conflict_is_a_condition_written_once_and_removed_when_resolved() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": "t"}
    first = conflict_conditions([ready], "Service ns/chat exists", generation=3, now=NOW)
    assert first is not None
    by_type = {c["type"]: c for c in first}
    assert by_type[CONFLICT]["status"] == "True"
    assert by_type[CONFLICT]["reason"] == "NameConflict"
    assert by_type["Ready"]["status"] == "False"
    assert conflict_conditions(first, "Service ns/chat exists", generation=3, now=NOW) is None
    cleared = without_conflict(first)
    assert cleared is not None
    assert CONFLICT not in {c["type"] for c in cleared}
    assert without_conflict(cleared) is None


# -- 10.8: no proxy from the environment unless told ------------------------------------------------


@contextlib.asynccontextmanager
async def api_and_proxy() -> AsyncIterator[tuple[str, list[str], list[str]]]:
    """An HTTP 'API server' and an HTTP 'proxy', each recording the paths it was asked for."""
    api_hits: list[str] = []
    proxy_hits: list[str] = []

    async def api(request: web.Request) -> web.Response:
        api_hits.append(request.path)
        return web.json_response(_service("chat", None))

    async def proxy(request: web.Request) -> web.Response:
        proxy_hits.append(str(request.url))
        return web.Response(status=502, text="proxied")

    runners = []
    ports = []
    for handler in (api, proxy):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        ports.append(runner.addresses[0][1])
    try:
        yield f"127.0.0.1:{ports[0]}|127.0.0.1:{ports[1]}", api_hits, proxy_hits
    finally:
        for runner in runners:
            await runner.cleanup()


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: 'http://{server}'}}}}]\n"
        "users: [{name: u, user: {token: secret-token}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    return path


@pytest.mark.parametrize("use_env_proxy", [False, True])
async def test_proxy_variables_apply_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_env_proxy: bool
) -> None:
    async with api_and_proxy() as (addresses, api_hits, proxy_hits):
        await _one_request_each(tmp_path, monkeypatch, use_env_proxy, addresses, api_hits, proxy_hits)


async def _one_request_each(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    use_env_proxy: bool,
    addresses: str,
    api_hits: list[str],
    proxy_hits: list[str],
) -> None:
    api, proxy = addresses.split("|")
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(var, f"http://{proxy}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    access = load_access(kubeconfig=_kubeconfig(tmp_path, api), in_cluster=False, use_env_proxy=use_env_proxy)
    kube = Kube(access)
    watch = kube.watch_client()
    try:
        if use_env_proxy:
            with pytest.raises(httpx2.HTTPStatusError):  # the proxy's 502
                await kube.get("v1", "Service", "chat", "ns")
            assert (await watch.get("/api/v1/pods")).status_code == 502
            assert len(proxy_hits) == 2
            assert api_hits == []
        else:
            assert await kube.get("v1", "Service", "chat", "ns") is not None
            assert (await watch.get("/api/v1/pods")).status_code == 200
            assert proxy_hits == []
            assert len(api_hits) == 2
    finally:
        await watch.aclose()
        await kube.close()


def test_the_run_command_has_the_proxy_flag_off_by_default() -> None:
    from kubeforge.cli import build_parser

    args = build_parser().parse_args(["run", "--kubeconfig", "k"])
    assert args.use_env_proxy is False
    assert build_parser().parse_args(["run", "--use-env-proxy"]).use_env_proxy is True


# -- 10.3: pods are matched to their owner by owner-reference UID ------------------------------------


def test_the_store_finds_pods_by_controller_uid_and_forgets_them_on_delete() -> None:
    from kubeforge.kube.informer import Store

    store = Store(index_labels=("kubeforge.dev/trainingjob",))
    labels = {"app.kubernetes.io/managed-by": "kubeforge", "kubeforge.dev/trainingjob": "tj"}
    ours: Obj = {
        "metadata": {
            "name": "tj-a0-0",
            "namespace": "ns",
            "labels": labels,
            "ownerReferences": [{"kind": "Job", "uid": "job-uid", "controller": True}],
        }
    }
    copycat: Obj = {"metadata": {"name": "copycat", "namespace": "ns", "labels": dict(labels)}}
    store.put(ours)
    store.put(copycat)
    assert [o["metadata"]["name"] for o in store.controlled_by("job-uid")] == ["tj-a0-0"]
    assert len(store.by_index("kubeforge.dev/trainingjob", "ns", "tj")) == 2, "labels only narrow"
    store.pop(("ns", "tj-a0-0"))
    assert store.controlled_by("job-uid") == []


async def test_a_tenant_pod_copying_a_fleets_labels_is_not_counted() -> None:
    from test_fleet_controller import NS, SPEC, FakeKube, cond, controller

    kube = FakeKube()
    fleet = kube.add_fleet("chat", SPEC)
    ctrl = controller(kube)
    await ctrl.reconcile(fleet)
    kube.run_deployment()
    await ctrl.reconcile(fleet)
    assert cond(fleet, "Ready") == ("True", "Serving")
    degraded = cond(fleet, "Degraded")
    deployment = kube.deployments()[0]
    # Anyone who can create a pod in the namespace can copy the labels (and even name a ReplicaSet).
    kube.objects[("Pod", NS, "copycat")] = {
        "metadata": {
            "name": "copycat",
            "namespace": NS,
            "labels": dict(deployment["spec"]["template"]["metadata"]["labels"]),
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "chat-x", "uid": "forged", "controller": True}
            ],
        },
        "spec": {"nodeName": "node"},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "server", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
        },
    }
    await ctrl.reconcile(fleet)
    assert cond(fleet, "Ready") == ("True", "Serving"), "a tenant's crashing pod degraded the fleet"
    assert cond(fleet, "Degraded") == degraded
    await ctrl.forget(NS, "chat")


async def test_a_tenant_pod_copying_a_trainingjobs_labels_is_not_a_failed_worker() -> None:
    from test_trainingjob_controller import TJ, FakeKube, _reconcile, _trainingjob

    kube = FakeKube()
    kube.nodes(2)
    kube.add(_trainingjob(policy={"backoffSeconds": 0, "maxRestarts": 0}))
    await _reconcile(kube)
    job = kube.jobs()[0]
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "copycat",
                "namespace": "ns",
                "labels": dict(job["spec"]["template"]["metadata"]["labels"]),
                "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
                # Naming the Job as a (non-controller) owner needs nothing but its UID, readable to all.
                "ownerReferences": [
                    {"kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]}
                ],
            },
            "spec": {"nodeName": "h100-0"},
            "status": {
                "phase": "Failed",
                "containerStatuses": [{"name": "worker", "state": {"terminated": {"exitCode": 1}}}],
            },
        }
    )
    tj = await _reconcile(kube)
    assert tj["status"]["phase"] != "Failed", "a tenant's pod failed the job"
    assert tj["status"].get("restarts", 0) == 0
    assert await kube.get(*TJ, "tj", "ns") is not None


# -- 10.7: PriorityClasses outside the operator owner's allow-list -----------------------------------


@pytest.mark.parametrize(
    ("name", "allowed", "refused"),
    [
        (None, frozenset(), False),
        ("batch-low", None, False),
        ("batch-low", frozenset({"batch-low", "serving"}), False),
        ("system-node-critical", frozenset({"batch-low"}), True),
        ("system-cluster-critical", frozenset(), True),
    ],
)
def test_priority_class_refusal(name: str | None, allowed: frozenset[str] | None, refused: bool) -> None:
    from kubeforge.controllers.ownership import priority_class_refusal

    message = priority_class_refusal(name, allowed)
    assert (message is not None) == refused
    if message is not None:
        assert f"'{name}'" in message
        assert "spec.priorityClassName" in message


def test_the_allow_list_flag() -> None:
    from kubeforge.cli import _allowed_priority_classes

    assert _allowed_priority_classes(None) is None
    assert _allowed_priority_classes("") == frozenset()
    assert _allowed_priority_classes("a, b") == frozenset({"a", "b"})


async def test_a_fleet_naming_a_refused_priority_class_gets_nothing_built() -> None:
    from typing import cast

    from kubeforge.controllers.inferencefleet import InferenceFleetController
    from kubeforge.controllers.runtime import OperatorConfig
    from test_fleet_controller import NS, SPEC, FakeKube, cond

    kube = FakeKube()
    fleet = kube.add_fleet("chat", {**SPEC, "priorityClassName": "system-node-critical"})
    config = OperatorConfig(allowed_priority_classes=frozenset({"serving"}))
    ctrl = InferenceFleetController(cast(Kube, kube), kube.caches(), config)
    await ctrl.reconcile(fleet)
    assert kube.deployments() == []
    assert cond(fleet, "Ready") == ("False", "InvalidSpec")
    ready = next(c for c in fleet["status"]["conditions"] if c["type"] == "Ready")
    assert "system-node-critical" in ready["message"]
    fleet["spec"]["priorityClassName"] = "serving"
    await ctrl.reconcile(fleet)
    assert len(kube.deployments()) == 1
    await ctrl.forget(NS, "chat")


async def test_a_trainingjob_naming_a_refused_priority_class_gets_nothing_built() -> None:
    from typing import cast

    from kubeforge.controllers.runtime import OperatorConfig
    from kubeforge.controllers.trainingjob import TrainingJobController
    from test_trainingjob_controller import TJ, FakeKube, _trainingjob

    kube = FakeKube()
    kube.nodes(2)
    kube.add(_trainingjob(priorityClassName="system-node-critical"))
    config = OperatorConfig(allowed_priority_classes=frozenset({"batch-low"}))
    ctrl = TrainingJobController(cast(Kube, kube), kube.caches(), config)
    for _ in range(2):  # the second pass writes nothing more
        obj = await kube.get(*TJ, "tj", "ns")
        assert obj is not None
        assert await ctrl.reconcile(obj) is None
    assert kube.jobs() == []
    tj = await kube.get(*TJ, "tj", "ns")
    assert tj is not None
    ready = next(c for c in tj["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PriorityClassNotAllowed")
    assert [e[1] for e in kube.events] == ["PriorityClassNotAllowed"]


# -- 10.4: an HTTPRoute is edited only if it opts in, and only the fleet's own backends ---------------


def _route(labels: dict[str, str], backends: list[Obj]) -> Obj:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "7", "labels": labels},
        "spec": {"rules": [{"backendRefs": backends}]},
    }


@pytest.mark.parametrize(
    ("labels", "opted_in"),
    [
        ({}, False),
        ({"kubeforge.dev/inferencefleet": "other"}, False),
        ({"kubeforge.dev/inferencefleet": "chat"}, True),
    ],
)
async def test_a_route_that_does_not_opt_in_is_never_patched(labels: dict[str, str], opted_in: bool) -> None:
    from test_fleet_controller import NS, Clock, FakeKube, FakeSource, cond, controller
    from test_fleet_rollout import CANARY, fleet, steady

    kube, source, clock = FakeKube(), FakeSource(), Clock()
    ctrl = controller(kube, source, clock)
    route = _route(labels, [{"name": "chat", "port": 8000}])
    kube.objects[("HTTPRoute", NS, "web")] = copy.deepcopy(route)
    await steady(kube, ctrl, {**CANARY, "rollout": {"httpRoute": {"name": "web"}}})
    if opted_in:
        assert cond(fleet(kube), "TrafficRouted") == ("True", "WeightsSet")
        assert kube.objects[("HTTPRoute", NS, "web")] != route
    else:
        assert kube.objects[("HTTPRoute", NS, "web")] == route
        assert cond(fleet(kube), "TrafficRouted") == ("False", "HTTPRouteUnreadable")
        message = next(c for c in fleet(kube)["status"]["conditions"] if c["type"] == "TrafficRouted")
        assert "kubeforge.dev/inferencefleet=chat" in message["message"]
    await ctrl.forget(NS, "chat")


def test_a_backend_of_the_same_name_in_another_namespace_is_not_the_fleets() -> None:
    from kubeforge.builders.inferencefleet import route_patch

    theirs = {"name": "chat", "namespace": "other-team", "port": 8000}
    route = _route({}, [theirs])
    assert route_patch(route, name="chat", port=8000, weights={"r1": 100}, revisions={"r1"}) is None
    mine = _route({}, [{"name": "chat", "namespace": "ns", "port": 8000}, theirs])
    patch = route_patch(mine, name="chat", port=8000, weights={"r1": 100}, revisions={"r1"})
    assert patch is not None
    backends = patch["spec"]["rules"][0]["backendRefs"]
    assert theirs in backends
    assert {"name": "chat-r1", "port": 8000, "weight": 100} in backends


# -- 10.6: --bind-address and --metrics-bind-address are honoured ------------------------------------


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


def test_bind_flags_reach_the_endpoints() -> None:
    from kubeforge.cli import build_parser

    args = build_parser().parse_args(["run", "--bind-address", "10.0.0.5"])
    assert (args.bind_address, args.metrics_bind_address) == ("10.0.0.5", None)
    args = build_parser().parse_args(["run", "--metrics-bind-address", "127.0.0.1"])
    assert args.metrics_bind_address == "127.0.0.1"


async def test_health_and_metrics_listen_only_where_told() -> None:
    """127.0.0.2 and 127.0.0.3 are loopback addresses distinct from 127.0.0.1: a server bound to one
    of them refuses connections on the others, as one bound to 127.0.0.1 refuses the pod's IP."""
    from kubeforge.controllers.operator import Endpoints, _health_server
    from kubeforge.kube.informer import Caches
    from kubeforge.metrics import exposition

    endpoints = Endpoints(
        metrics_port=_free_port("127.0.0.3"),
        health_port=_free_port("127.0.0.2"),
        bind_address="127.0.0.2",
        metrics_bind_address="127.0.0.3",
    )
    runner = await _health_server(endpoints, Caches([]))
    try:
        assert _accepts("127.0.0.2", endpoints.health_port)
        assert not _accepts("127.0.0.1", endpoints.health_port)
    finally:
        await runner.cleanup()
    exposition.serve(endpoints.metrics_port, endpoints.metrics_address)
    assert _accepts("127.0.0.3", endpoints.metrics_port)
    assert not _accepts("127.0.0.1", endpoints.metrics_port)
    assert Endpoints(bind_address="127.0.0.9").metrics_address == "127.0.0.9"


# -- 10.6: /metrics behind TokenReview and SubjectAccessReview ---------------------------------------


class FakeReviewer:
    """The API server's answers: `tokens` maps a token to its user; `readers` may get /metrics."""

    def __init__(self) -> None:
        self.tokens = {"reader-token": "system:serviceaccount:monitoring:prometheus", "other-token": "alice"}
        self.readers = {"system:serviceaccount:monitoring:prometheus"}
        self.reviews: list[str] = []

    async def review_token(self, token: str) -> dict[str, Any]:
        self.reviews.append("token")
        user = self.tokens.get(token)
        if user is None:
            return {"authenticated": False}
        return {"authenticated": True, "user": {"username": user, "groups": ["system:authenticated"]}}

    async def review_access(self, user: Any, *, path: str, verb: str) -> bool:
        self.reviews.append("access")
        return bool(path == "/metrics" and verb == "get" and user["username"] in self.readers)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, 401),
        ("Basic dXNlcjpwYXNz", 401),
        ("Bearer ", 401),
        ("Bearer forged", 401),
        ("Bearer other-token", 403),
        ("Bearer reader-token", 200),
        ("bearer reader-token", 200),
    ],
)
async def test_the_metrics_gate(header: str | None, code: int) -> None:
    from kubeforge.controllers.metrics_auth import MetricsGate

    assert await MetricsGate(FakeReviewer()).decide(header) == code


async def test_the_metrics_gate_remembers_answers_for_a_minute() -> None:
    from kubeforge.controllers.metrics_auth import MetricsGate

    reviewer, now = FakeReviewer(), [0.0]
    gate = MetricsGate(reviewer, clock=lambda: now[0])
    for _ in range(5):
        assert await gate.decide("Bearer reader-token") == 200
    assert reviewer.reviews == ["token", "access"]
    reviewer.readers.clear()  # RBAC changed: seen once the answer expires
    now[0] = 61.0
    assert await gate.decide("Bearer reader-token") == 403


async def test_metrics_are_served_only_through_the_gate() -> None:
    from kubeforge.controllers.metrics_auth import MetricsGate, serve

    port = _free_port("127.0.0.1")
    runner = await serve(MetricsGate(FakeReviewer()), "127.0.0.1", port)
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            assert (await http.get("/metrics")).status_code == 401
            refused = await http.get("/metrics", headers={"Authorization": "Bearer other-token"})
            assert refused.status_code == 403
            assert "controller_runtime" not in refused.text
            allowed = await http.get("/metrics", headers={"Authorization": "Bearer reader-token"})
            assert allowed.status_code == 200
            assert "controller_runtime_reconcile_total" in allowed.text
    finally:
        await runner.cleanup()


# -- 10.3: GPU accounting attributes pods to a gang by owner UID ------------------------------------


def _gang_caches() -> Any:
    from kubeforge.kube import projections
    from kubeforge.kube.informer import Caches, Informer, Source
    from kubeforge.kube.kinds import JOB, NODE, POD, TRAININGJOB

    return Caches(
        [
            Informer(None, Source(TRAININGJOB, projections.owned_resource)),  # type: ignore[arg-type]
            Informer(None, Source(JOB, projections.child)),  # type: ignore[arg-type]
            Informer(None, Source(POD, projections.pod)),  # type: ignore[arg-type]
            Informer(None, Source(NODE, projections.node)),  # type: ignore[arg-type]
        ]
    )


def _gang_pod(name: str, owner: Obj | None) -> Obj:
    meta: Obj = {
        "name": name,
        "namespace": "ns",
        "resourceVersion": "1",
        "labels": {
            "app.kubernetes.io/managed-by": "kubeforge",
            "kubeforge.dev/trainingjob": "tj",
            "kubeforge.dev/attempt": "0",
        },
    }
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "w", "resources": {"requests": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": "Running"},
    }


@pytest.mark.parametrize("order", ["owners first", "pods first (a relist)"])
def test_only_the_gangs_own_pods_count_as_its_placed_workers(order: str) -> None:
    from kubeforge.kube.kinds import JOB, NODE, POD, TRAININGJOB
    from kubeforge.policy import capacity

    caches = _gang_caches()
    tj: Obj = {
        "apiVersion": "kubeforge.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "tj", "namespace": "ns", "uid": "tj-uid", "resourceVersion": "1"},
    }
    job: Obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "tj-a0",
            "namespace": "ns",
            "uid": "job-uid",
            "resourceVersion": "1",
            "ownerReferences": [{"kind": "TrainingJob", "name": "tj", "uid": "tj-uid", "controller": True}],
        },
    }
    node: Obj = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "resourceVersion": "1"},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    worker = _gang_pod("tj-a0-0", {"kind": "Job", "name": "tj-a0", "uid": "job-uid", "controller": True})
    forged = _gang_pod("copycat", {"kind": "Job", "name": "tj-a0", "uid": "made-up", "controller": True})
    plain = _gang_pod("copycat-2", None)
    owners = [(TRAININGJOB, tj), (JOB, job)]
    pods = [(POD, worker), (POD, forged), (POD, plain)]
    for kind, obj in [(NODE, node), *(owners + pods if order == "owners first" else pods + owners)]:
        caches.informer(kind)._apply("ADDED", obj)
    gang = capacity.demand_of("ns/tj", workers=4, gpus=1, gpu_type=None)
    assert caches.capacity().unplaced(gang, 0).workers == 3, "only the Job's own pod is a placed worker"
    assert caches.capacity().free().get("n1") == 5, "every pod bound there holds its GPU"
