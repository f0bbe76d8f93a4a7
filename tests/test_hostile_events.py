"""A tenant in bad faith against the operator's API writes: a standing name conflict.

A tenant keeps a Service under a fleet's (or TrainingJob's) child name. The `Conflict` condition is
written once, but the `NameConflict` Warning Event used to be created again on every pass that met the
conflict: every retry and every resync (on the local cluster with `--resync-seconds 2`, about 45 Event
objects in 90 s for one fleet). Events are API writes the tenant makes the operator do, so one is enough
while the conflict (the condition) stands; a changed conflict (another message) is reported again."""

from __future__ import annotations

import copy
from typing import Any, cast

from kubeforge.controllers.ownership import NAME_CONFLICT, warn_owner
from kubeforge.kube.client import Kube
from kubeforge.kube.kinds import INFERENCEFLEET

Obj = dict[str, Any]


class RecordingKube:
    def __init__(self, obj: Obj) -> None:
        self.obj = obj
        self.events: list[str] = []

    async def event(self, involved: Obj, *, type_: str, reason: str, message: str) -> None:
        self.events.append(message)

    async def patch_status(self, api_version: str, kind: str, name: str, namespace: str, status: Obj) -> Obj:
        self.obj.setdefault("status", {}).update(copy.deepcopy(status))
        return copy.deepcopy(self.obj)


async def test_a_standing_name_conflict_is_one_event_not_one_per_pass() -> None:
    fleet: Obj = {"metadata": {"name": "chat", "namespace": "ns", "generation": 1}, "status": {}}
    kube = RecordingKube(fleet)
    message = "Service ns/chat exists and is not controlled by this object"
    for _ in range(5):  # five passes, each reading the object as the cache has it after the last write
        await warn_owner(cast(Kube, kube), INFERENCEFLEET, copy.deepcopy(kube.obj), NAME_CONFLICT, message)
    assert kube.events == [message]
    other = "Service ns/chat-canary exists and is not controlled by this object"
    await warn_owner(cast(Kube, kube), INFERENCEFLEET, copy.deepcopy(kube.obj), NAME_CONFLICT, other)
    assert kube.events == [message, other]
