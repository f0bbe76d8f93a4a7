"""The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as
plain loopback processes, with simulated GPU nodes from the topology file.

Everything lives in ``<repo>/.cluster/``: certificates, the admin kubeconfig, ``bin/`` (kubectl, helm and
the control plane binaries, linked from the build cache), pid files, logs and etcd's data.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubeforge_e2e import pki, procs
from kubeforge_e2e.api import Api, ApiError
from kubeforge_e2e.paths import BUILD_SCRIPT, STAGES_DIR, Paths, cache_dir, read_versions
from kubeforge_e2e.safety import file_sha256, verify_kubeconfig
from kubeforge_e2e.tools import Helm, Kubectl, kubeconfig_text, tool_env, wait_for
from kubeforge_e2e.topology import KWOK_LABEL, KWOK_LABEL_VALUE, NodeSpec, Topology, load_topology

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm")
# Started in this order, stopped in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
NODE_IP = "10.255.0.1"
# Short node-loss timings so tests that simulate a lost node finish quickly.
NODE_MONITOR_GRACE = "20s"
NODE_LEASE_SECONDS = 20
TOLERATION_SECONDS = 10

NOT_READY_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")

# The Gateway API CRDs every cluster gets (from the pinned module, copied by build.sh): a route the
# operator patches is then checked by the API server's own schema and CEL rules.
GATEWAY_API_CRD = "httproutes.gateway.networking.k8s.io"
GATEWAY_API_BUNDLE = "gateway.networking.k8s.io/bundle-version"


def gateway_api_dir(version: str) -> Path:
    """Where build.sh keeps the standard-channel manifests of Gateway API ``version``."""
    return cache_dir() / "gateway-api" / version


class ClusterError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log(message: str) -> None:
    print(f"[kubeforge-e2e] {message}", file=sys.stderr, flush=True)


def node_ready(node: dict[str, Any]) -> bool:
    """Ready=True and none of the node lifecycle controller's not-ready/unreachable taints."""
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = node.get("spec", {}).get("taints") or []
    return ready and not any(t.get("key") in NOT_READY_TAINTS for t in taints)


class LocalCluster:
    """The project's local cluster. ``up()`` starts it (or reuses a running one), ``down()`` stops it.

    Attributes for tests: ``kubeconfig`` (admin kubeconfig path), ``bin_dir`` (kubectl, helm),
    ``server`` (API URL), ``ca_file``, ``topology``; ``kubectl`` and ``helm`` helpers; node-loss helpers
    ``add_node``, ``set_node_ready``, ``delete_node``."""

    def __init__(self, paths: Paths | None = None, topology: Topology | None = None) -> None:
        self.paths = paths or Paths.default()
        self.topology = topology or load_topology()
        self.kubectl = Kubectl(self.paths)
        self.helm = Helm(self.paths)

    # ----------------------------------------------------------------------------------- properties
    @property
    def kubeconfig(self) -> Path:
        return self.paths.kubeconfig

    @property
    def bin_dir(self) -> Path:
        return self.paths.bin

    @property
    def ca_file(self) -> Path:
        return self.paths.ca_cert

    @property
    def server(self) -> str:
        return str(self._state()["server"])

    @property
    def marker(self) -> str:
        """Every process the harness starts runs a binary under this folder (``pgrep -f`` finds them)."""
        return str(self.paths.bin) + os.sep

    def env(self) -> dict[str, str]:
        """An environment for subprocesses (e.g. the operator) that must use this cluster only."""
        return tool_env(self.paths)

    def _state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.paths.state.read_text())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"no cluster state in {self.paths.state}: is the cluster up?") from exc
        if not isinstance(data, dict):
            raise ClusterError(f"malformed {self.paths.state}")
        return data

    def api(self, timeout: float = 10.0) -> Api:
        """An admin client (after checking the kubeconfig is ours); close it after use. Raise `timeout`
        for calls that do a lot at once (deleting a thousand objects in one request)."""
        server = verify_kubeconfig(self.paths)
        return Api(
            server,
            self.paths.ca_cert,
            self.paths.pki / "admin.crt",
            self.paths.pki / "admin.key",
            timeout=timeout,
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        with self.paths.lock.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # --------------------------------------------------------------------------------------- status
    def processes(self) -> dict[str, tuple[int, bool]]:
        """name -> (pid, alive) for every recorded process."""
        return {
            name: (pid, procs.is_alive(pid, self.marker))
            for name, pid in procs.recorded(self.paths.run).items()
        }

    def is_up(self) -> bool:
        """Every component runs and the API server answers ready with the harness's credentials."""
        running = self.processes()
        # Processes started on demand next to the control plane (Kueue, see kueue.py) may be recorded too;
        # they are stopped with it but do not decide whether it is up.
        if not all(name in running and running[name][1] for name in COMPONENTS):
            return False
        try:
            with self.api() as api:
                return api.healthy()
        except Exception:
            return False

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "up": self.is_up(),
            "processes": {
                name: {"pid": pid, "alive": alive} for name, (pid, alive) in self.processes().items()
            },
        }
        if info["up"]:
            info["server"] = self.server
            info["kubeconfig"] = str(self.kubeconfig)
            with self.api() as api:
                nodes = api.get("/api/v1/nodes")["items"]
            info["nodes"] = {n["metadata"]["name"]: "Ready" if node_ready(n) else "NotReady" for n in nodes}
        return info

    # ------------------------------------------------------------------------------------------- up
    def up(self, *, started_by: str = "cli", timeout: float = 180.0) -> float:
        """Start the cluster, or reuse the running one; wait until the API is ready, the ``default``
        ServiceAccount exists and every topology node is Ready. Returns the elapsed seconds."""
        with self._locked():
            return self._up_locked(started_by, timeout)

    def _up_locked(self, started_by: str, timeout: float) -> float:
        start = time.monotonic()
        if self.is_up():
            _log(f"cluster already up at {self.server}; reusing it")
            self._restore_topology()
        else:
            self._stop_all()
            self._start(started_by, timeout)
        # The CRDs go in while the nodes come up: a warm start pays for neither twice.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            crds = pool.submit(self._ensure_gateway_api)
            self._wait_ready(timeout - (time.monotonic() - start))
            crds.result()
        elapsed = time.monotonic() - start
        print(f"cluster ready in {elapsed:.1f}s ({self.server}, kubeconfig {self.kubeconfig})", flush=True)
        return elapsed

    def acquire(self, timeout: float = 180.0) -> bool:
        """For a test session: start the cluster unless it runs, and register this process as a user.
        Returns True when this call started it."""
        with self._locked():
            started = not self.is_up()
            self._up_locked("fixture", timeout)
            self.register_user()
            return started

    def release(self) -> bool:
        """For a test session: unregister; stop the cluster when a test session started it and no other
        session still uses it (a cluster from ``make cluster-up`` keeps running). Returns True if stopped."""
        with self._locked():
            others = self.unregister_user()
            if others or os.environ.get("KUBEFORGE_KEEP_CLUSTER") == "1":
                return False
            try:
                if self.started_by() != "fixture":
                    return False
            except ClusterError:
                return False
            self._stop_all()
            print("cluster down; no process left", flush=True)
            return True

    def _restore_topology(self) -> None:
        """A reused cluster gets back any topology node a previous session deleted or left NotReady."""
        with self.api() as api:
            for spec in self.topology.nodes:
                try:
                    node = api.get(f"/api/v1/nodes/{spec.name}")
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    api.post("/api/v1/nodes", spec.manifest())
                    continue
                if node["metadata"].get("labels", {}).get(KWOK_LABEL) != KWOK_LABEL_VALUE:
                    api.merge_patch(
                        f"/api/v1/nodes/{spec.name}", {"metadata": {"labels": {KWOK_LABEL: KWOK_LABEL_VALUE}}}
                    )

    def _ensure_binaries(self) -> Path:
        """Build (or find cached) binaries, then link them into ``.cluster/bin``."""
        versions = read_versions()
        bindir = cache_dir() / "bin"
        stamps = [
            f".kubernetes-{versions['KUBERNETES_VERSION']}",
            f".etcd-{versions['ETCD_VERSION']}",
            f".kwok-{versions['KWOK_VERSION']}",
            f".helm-{versions['HELM_VERSION']}",
            f".gateway-api-{versions['GATEWAY_API_VERSION']}",
        ]
        missing = [s for s in stamps if not (bindir / s).is_file()] + [
            b for b in BINARIES if not (bindir / b).is_file()
        ]
        if missing:
            _log(f"building missing components ({', '.join(missing)}); the first build takes a while")
            result = subprocess.run(
                ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
            )
            if result.returncode != 0:
                raise ClusterError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
            bindir = Path(result.stdout.strip().splitlines()[-1])
        self.paths.bin.mkdir(parents=True, exist_ok=True)
        for name in BINARIES:
            link = self.paths.bin / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(bindir / name)
        return bindir

    def _fresh_dir(self) -> None:
        root = self.paths.root
        root.mkdir(parents=True, exist_ok=True)
        for entry in root.iterdir():
            if entry == self.paths.lock:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        for folder in (
            self.paths.pki,
            self.paths.logs,
            self.paths.run,
            self.paths.users,
            self.paths.kube_cache,
        ):
            folder.mkdir(parents=True)

    def _write_kubeconfig(self, path: Path, server: str, name: str) -> None:
        path.write_text(
            kubeconfig_text(
                server,
                self.paths.ca_cert,
                self.paths.pki / f"{name}.crt",
                self.paths.pki / f"{name}.key",
                name,
            )
        )
        path.chmod(0o600)

    def _start(self, started_by: str, timeout: float) -> None:
        self._fresh_dir()
        self._ensure_binaries()
        paths, pki_dir = self.paths, self.paths.pki
        pki.generate(pki_dir)
        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        server = f"https://127.0.0.1:{api_port}"
        versions = read_versions()
        paths.state.write_text(
            json.dumps(
                {
                    "server": server,
                    "ports": {"etcd": etcd_port, "etcd-peer": peer_port, "kube-apiserver": api_port},
                    "ca_sha256": file_sha256(paths.ca_cert),
                    "started_by": started_by,
                    "started_at": _now(),
                    "versions": versions,
                },
                indent=2,
            )
            + "\n"
        )
        self._write_kubeconfig(paths.kubeconfig, server, "admin")
        kubeconfigs = paths.root / "kubeconfigs"
        kubeconfigs.mkdir()
        for name in ("controller-manager", "scheduler", "kwok"):
            self._write_kubeconfig(kubeconfigs / f"{name}.kubeconfig", server, name)

        b = paths.bin
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        argv: dict[str, list[str]] = {
            "etcd": [
                str(b / "etcd"),
                "--name=default",
                f"--data-dir={paths.etcd_data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--initial-cluster-state=new",
                "--quota-backend-bytes=1073741824",
                "--unsafe-no-fsync=true",
                "--snapshot-count=10000",
                "--log-level=warn",
            ],
            "kube-apiserver": [
                str(b / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
                f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
                f"--client-ca-file={paths.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki_dir / 'sa.pub'}",
                f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                f"--default-not-ready-toleration-seconds={TOLERATION_SECONDS}",
                f"--default-unreachable-toleration-seconds={TOLERATION_SECONDS}",
                "--event-ttl=1h",
            ],
            "kube-controller-manager": [
                str(b / "kube-controller-manager"),
                f"--kubeconfig={kubeconfigs / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki_dir / 'sa.key'}",
                f"--root-ca-file={paths.ca_cert}",
                "--controllers=*",
                f"--node-monitor-grace-period={NODE_MONITOR_GRACE}",
                "--node-monitor-period=2s",
                "--node-eviction-rate=10",
                "--kube-api-qps=100",
                "--kube-api-burst=200",
                "--profiling=false",
            ],
            "kube-scheduler": [
                str(b / "kube-scheduler"),
                f"--kubeconfig={kubeconfigs / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--profiling=false",
            ],
            "kwok": [
                str(b / "kwok"),
                f"--kubeconfig={kubeconfigs / 'kwok.kubeconfig'}",
                *[f"--config={stage}" for stage in sorted(STAGES_DIR.glob("*.yaml"))],
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={KWOK_LABEL}={KWOK_LABEL_VALUE}",
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                f"--cidr={POD_CIDR}",
                f"--node-ip={NODE_IP}",
            ],
        }
        env = tool_env(paths)

        def launch(name: str) -> None:
            procs.start(name, argv[name], run_dir=paths.run, log_dir=paths.logs, cwd=paths.root, env=env)

        _log(f"starting etcd and kube-apiserver on {server}")
        launch("etcd")
        launch("kube-apiserver")
        with Api(server, paths.ca_cert, pki_dir / "admin.crt", pki_dir / "admin.key") as api:
            try:
                wait_for(
                    lambda: self._check_alive(("etcd", "kube-apiserver")) and api.healthy(),
                    timeout=timeout,
                    interval=0.25,
                    description="kube-apiserver /readyz",
                )
            except TimeoutError as exc:
                raise ClusterError(f"{exc}; see {paths.logs}") from exc
            _log("API server ready; starting kube-controller-manager, kube-scheduler and kwok")
            for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
                launch(name)
            for spec in self.topology.nodes:
                api.post("/api/v1/nodes", spec.manifest())

    def _ensure_gateway_api(self) -> None:
        """Apply the pinned Gateway API CRDs unless the cluster has them at that version already (one GET
        on a warm reuse), then wait until they serve."""
        version = read_versions()["GATEWAY_API_VERSION"]
        with self.api() as api:
            try:
                crd = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{GATEWAY_API_CRD}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                crd = {}
        if (crd.get("metadata", {}).get("annotations") or {}).get(GATEWAY_API_BUNDLE) == version:
            return
        manifests = gateway_api_dir(version)
        if not any(manifests.glob("*.yaml")):
            self._ensure_binaries()  # build.sh copies them out of the module
        _log(f"applying the Gateway API {version} standard-channel CRDs from {manifests}")
        # Server-side: the HTTPRoute CRD is too large for client-side apply's last-applied annotation.
        self.kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(manifests))
        # controller-gen names each CRD's file <group>_<plural>.yaml; the other file is an admission policy.
        crds = [
            f"crd/{plural}.{group}"
            for group, _, plural in (f.stem.partition("_") for f in sorted(manifests.glob("*.yaml")))
            if not plural.startswith("vap_")
        ]
        self.kubectl.run("wait", "--for=condition=Established", "--timeout=60s", *crds)

    def _check_alive(self, names: tuple[str, ...]) -> bool:
        running = self.processes()
        dead = [n for n in names if n not in running or not running[n][1]]
        if dead:
            raise ClusterError(f"{', '.join(dead)} exited; see {self.paths.logs}/<name>.log")
        return True

    def _wait_ready(self, timeout: float) -> None:
        names = set(self.topology.names())
        with self.api() as api:

            def ready() -> bool:
                self._check_alive(COMPONENTS)
                try:
                    api.get("/api/v1/namespaces/default/serviceaccounts/default")
                except ApiError:
                    return False
                nodes = api.get("/api/v1/nodes")["items"]
                ready_nodes = {n["metadata"]["name"] for n in nodes if node_ready(n)}
                return names <= ready_nodes

            try:
                wait_for(
                    ready,
                    timeout=max(timeout, 10.0),
                    interval=0.25,
                    description="default ServiceAccount and Ready topology nodes",
                )
            except TimeoutError as exc:
                raise ClusterError(f"{exc}; see {self.paths.logs}") from exc

    # ----------------------------------------------------------------------------------------- down
    def down(self) -> None:
        """Stop every process the harness started and check that none is left."""
        with self._locked():
            self._stop_all()
        print("cluster down; no process left", flush=True)

    def _stop_all(self) -> None:
        recorded = procs.recorded(self.paths.run)
        # Processes started next to the control plane (Kueue) go first, while the API server they talk
        # to still answers: stopped after it, they hang in their shutdown until killed.
        order = [n for n in recorded if n not in COMPONENTS] + [
            n for n in reversed(COMPONENTS) if n in recorded
        ]
        for name in order:
            left = procs.stop([recorded[name]], self.marker)
            if left:
                raise ClusterError(f"{name} (pid {left[0]}) did not stop")
        # Anything else still running one of our binaries (e.g. from an interrupted `up`) goes too.
        stray = procs.find_by_marker(self.marker)
        if stray:
            _log(f"stopping leftover processes {stray}")
            left = procs.stop(stray, self.marker)
            if left:
                raise ClusterError(f"processes {left} did not stop")
        for pid_file in self.paths.run.glob("*.pid"):
            pid_file.unlink()
        if procs.find_by_marker(self.marker):
            raise ClusterError("processes of the local cluster are still running")

    # ---------------------------------------------------------------------------- sharing by sessions
    def register_user(self, pid: int | None = None) -> None:
        """Record that a test session (by pid) uses the cluster."""
        self.paths.users.mkdir(parents=True, exist_ok=True)
        (self.paths.users / str(pid or os.getpid())).write_text("")

    def unregister_user(self, pid: int | None = None) -> int:
        """Forget a test session; returns how many other live sessions still use the cluster."""
        with contextlib.suppress(FileNotFoundError):
            (self.paths.users / str(pid or os.getpid())).unlink()
        live = 0
        for entry in self.paths.users.glob("*") if self.paths.users.is_dir() else []:
            try:
                os.kill(int(entry.name), 0)
            except (ValueError, ProcessLookupError):
                entry.unlink(missing_ok=True)
                continue
            except PermissionError:
                pass
            live += 1
        return live

    def started_by(self) -> str:
        return str(self._state().get("started_by", ""))

    # --------------------------------------------------------------------------------- node helpers
    def get_node(self, name: str) -> dict[str, Any] | None:
        with self.api() as api:
            try:
                node: dict[str, Any] = api.get(f"/api/v1/nodes/{name}")
            except ApiError as exc:
                if exc.status == 404:
                    return None
                raise
        return node

    def is_node_ready(self, name: str) -> bool:
        node = self.get_node(name)
        return node is not None and node_ready(node)

    def add_node(self, spec: NodeSpec, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Create a simulated node; with ``wait``, return once it is Ready and schedulable."""
        with self.api() as api:
            api.post("/api/v1/nodes", spec.manifest())
        if wait:
            wait_for(
                lambda: self.is_node_ready(spec.name), timeout=timeout, description=f"node {spec.name} Ready"
            )

    def set_node_ready(self, name: str, ready: bool, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Simulate losing (``ready=False``) or recovering a node.

        NotReady: kwok stops managing the node (its label is removed, so no more heartbeats or lease
        renewals and pods on it are frozen), and its Ready condition is set to False; the node lifecycle
        controller then taints it ``node.kubernetes.io/not-ready:NoExecute`` and evicts its pods after the
        cluster's toleration of 10s. With ``wait``, returns once that taint is there.
        Ready: kwok manages it again and marks it Ready; with ``wait``, returns once it is Ready and
        the lifecycle controller's taints are gone."""
        path = f"/api/v1/nodes/{name}"
        with self.api() as api:
            if ready:
                api.merge_patch(path, {"metadata": {"labels": {KWOK_LABEL: KWOK_LABEL_VALUE}}})
                if wait:
                    wait_for(
                        lambda: self.is_node_ready(name), timeout=timeout, description=f"node {name} Ready"
                    )
                return
            api.merge_patch(path, {"metadata": {"labels": {KWOK_LABEL: None}}})
            not_ready = {
                "type": "Ready",
                "status": "False",
                "reason": "KubeletNotReady",
                "message": "simulated node failure (kubeforge e2e)",
                "lastHeartbeatTime": _now(),
                "lastTransitionTime": _now(),
            }

            def marked() -> bool:
                # kwok may still be finishing a status update it started before it let go of the node.
                node = api.get(path)
                conditions = node.get("status", {}).get("conditions") or []
                if any(c.get("type") == "Ready" and c.get("status") != "True" for c in conditions):
                    return True
                api.strategic_patch(f"{path}/status", {"status": {"conditions": [not_ready]}})
                return False

            wait_for(marked, timeout=timeout, interval=1.0, description=f"node {name} Ready=False")

            def tainted() -> bool:
                taints = api.get(path).get("spec", {}).get("taints") or []
                return any(
                    t.get("key") in NOT_READY_TAINTS and t.get("effect") == "NoExecute" for t in taints
                )

            if wait:
                wait_for(tainted, timeout=timeout, description=f"node {name} tainted NoExecute")

    def delete_node(
        self, name: str, *, delete_pods: bool = True, wait: bool = True, timeout: float = 60.0
    ) -> None:
        """Delete a node. With ``delete_pods`` (default), also force-delete the pods bound to it, as the
        pod garbage collector eventually does for pods of a vanished node (it waits ~40s first)."""
        with self.api() as api:
            with contextlib.suppress(ApiError):
                api.delete(f"/api/v1/nodes/{name}")
            if delete_pods:
                pods = api.get("/api/v1/pods", params={"fieldSelector": f"spec.nodeName={name}"})["items"]
                for pod in pods:
                    meta = pod["metadata"]
                    with contextlib.suppress(ApiError):
                        api.delete(
                            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
                        )
        if wait:
            wait_for(lambda: self.get_node(name) is None, timeout=timeout, description=f"node {name} deleted")
