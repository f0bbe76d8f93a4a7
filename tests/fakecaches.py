"""The controllers' cache `Reader` over a fake API server's objects, for controller tests without a
cluster: what a fake server holds is what a synced cache would show."""

from __future__ import annotations

import builtins
import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubeforge.kube.informer import Mark
from kubeforge.kube.kinds import NODE, POD, Kind
from kubeforge.policy import capacity

Obj = dict[str, Any]
Entry = tuple[str, str, Obj]
"""(kind, namespace, object)."""


class FakeCaches:
    def __init__(self, entries: Callable[[], Iterable[Entry]], *, copies: bool = False) -> None:
        self._entries = entries
        self._copies = copies

    def _out(self, obj: Obj) -> Obj:
        return copy.deepcopy(obj) if self._copies else obj

    def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj | None:
        for k, ns, obj in self._entries():
            if k == kind.kind and ns == (namespace or "") and obj["metadata"]["name"] == name:
                return self._out(obj)
        return None

    def controlled(self, kind: Kind, namespace: str, owner_uids: Iterable[str]) -> builtins.list[Obj]:
        uids = set(owner_uids)
        return [
            o
            for o in self.list(kind, namespace)
            if any(
                r.get("controller") and r.get("uid") in uids
                for r in o["metadata"].get("ownerReferences") or []
            )
        ]

    def capacity(self) -> capacity.Ledger:
        """Counted afresh from the fake server's nodes and pods (the real one is kept event by event)."""
        return capacity.Ledger.of(
            [capacity.node_info(n) for n in self.list(NODE)], [capacity.pod_info(p) for p in self.list(POD)]
        )

    def marked(self, kind: Kind, mark: Mark) -> builtins.list[Obj]:
        return [o for o in self.list(kind) if mark.test(o)]

    def serves(self, kind: Kind) -> bool:
        """Every kind: the fake server holds whatever a test puts in it."""
        return True

    def forbidden(self, kind: Kind) -> bool:
        return False

    def list(
        self, kind: Kind, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> builtins.list[Obj]:
        out = []
        for k, ns, obj in self._entries():
            if k != kind.kind or (namespace is not None and ns != namespace):
                continue
            have = obj["metadata"].get("labels") or {}
            if all(have.get(key) == value for key, value in (labels or {}).items()):
                out.append(self._out(obj))
        return out
