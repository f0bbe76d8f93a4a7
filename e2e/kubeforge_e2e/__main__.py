"""``python -m kubeforge_e2e up|down|status|build`` (with ``PYTHONPATH=e2e``)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from kubeforge_e2e.cluster import ClusterError, LocalCluster
from kubeforge_e2e.paths import BUILD_SCRIPT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubeforge_e2e", description="kubeforge's local Kubernetes control plane"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the cluster (or reuse the running one) and wait until it is Ready")
    sub.add_parser("down", help="stop every process of the cluster")
    sub.add_parser("status", help="print whether the cluster is up, its processes and nodes (JSON)")
    build = sub.add_parser("build", help="build the pinned binaries into the cache (a no-op when cached)")
    build.add_argument("components", nargs="*", help="kubernetes etcd kwok helm (default: all)")
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            return subprocess.run(["bash", str(BUILD_SCRIPT), *args.components], check=False).returncode
        cluster = LocalCluster()
        if args.command == "up":
            cluster.up(started_by="cli")
        elif args.command == "down":
            cluster.down()
        else:
            info = cluster.status()
            print(json.dumps(info, indent=2))
            return 0 if info["up"] else 1
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
