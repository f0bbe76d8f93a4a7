"""One reconcile pass of an InferenceFleet, as one pure function: `decide(FleetObserved) -> FleetPlan`.

The controller gathers a `FleetObserved` from its caches (the fleet, its Deployments, pods and
ControllerRevisions, the autoscaler's metric when an evaluation is due), calls `decide`, and carries out
the `FleetPlan` in its order. Every decision is made here or in the policies this calls: the replica count
(`autoscaler`), how replicas move between revisions (`rollout`), the analysis verdict (`analysis`), the
status (`fleet_status`), and which changes are news (`fleet_events`).

Some inputs cost I/O that is only worth doing when a decision needs it. As TrainingJob does for gang
admission, the plan then asks for it and is not to be carried out (`complete` is False); the controller
fetches it and decides again with it. Each is asked at most once a pass, in this order:

- `needs_capacity`: free GPUs bound a surge (a rollout is under way and pods ask for GPUs): the GPU
  nodes and their free GPUs, from the caches' capacity ledger;
- `measure`: the canary's analysis is due: what Prometheus says of it (and of the stable revision);
- `needs_templates`: a revision to run has no Deployment left (a rollback to a drained revision): its
  stored template, from its ControllerRevision (one of the two reads not served by the caches);
- `needs_route`: the weights of the fleet's HTTPRoute are to be set: the route (the other such read);
- `needs_usage`: `status.usage` folds a segment (a rate changed, or the checkpoint is due) and a metric
  source is configured: what Prometheus measured of the fleet over that segment (GPU power and
  utilization, requests and tokens served), for its energy and unit costs.

The plan names the children to write rather than building them. `kubeforge.builders` and
`kubeforge.policy` are sibling layers that may not import each other (import contracts), and the
builders already are the one place that knows what a child looks like. So an `Apply` says which child
and from which spec (the fleet's, or a rebuilt revision's stored template), and the controller builds it,
as TrainingJob's controller builds the Job its plan's `create_attempt` names. The HTTPRoute patch is
rendered the same way from the plan's weights (`builders.inferencefleet.route_patch`); a route that
already agrees is not written. The names the policy needs (Deployment and Service names, which fleet
names are unusable) are `kubeforge.api.fleet_names`, shared with the builders.

Writes are one ordered tuple because their order is part of the decision: scale-downs come before
scale-ups whether a revision is applied whole or only scaled, so the replicas asked for never exceed the
plan's surge, not even between two writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from kubeforge.api.catalog import DEFAULT_CATALOG, GpuCatalog
from kubeforge.api.common import Condition
from kubeforge.api.fleet_names import (
    deployment_name,
    name_problem,
    revision_service_name,
    revision_service_problem,
    routes_to_fleet,
)
from kubeforge.api.inferencefleet import (
    AutoscalerStatus,
    InferenceFleetSpec,
    InferenceFleetStatus,
    KueueClaim,
)
from kubeforge.api.objective import PolicyEntry
from kubeforge.api.rollout import AnalysisRun, AnalysisSpec
from kubeforge.policy import analysis, arbitration, autoscaler, capacity, kueue_claims
from kubeforge.policy import rollout as rollouts
from kubeforge.policy import usage as accounting
from kubeforge.policy.analysis import MetricSample
from kubeforge.policy.conditions import ConditionUpdate, parse_time
from kubeforge.policy.events import Event
from kubeforge.policy.fleet_events import changed_conditions, condition_events, outcomes, scale_event
from kubeforge.policy.fleet_status import (
    MetricsHealth,
    PodSummary,
    RevisionPods,
    RevisionState,
    RolloutConditions,
    compute_status,
    invalid_status,
)

MAX_ROUNDS = 6
"""Decisions a pass can take at most: one, and one more per kind of input a plan may ask for."""


# ---------------------------------------------------------------------------------------------------
# What one pass saw.


@dataclass(frozen=True)
class FleetMemory:
    """What the controller keeps of the autoscaler between passes. All of it can be lost: status has
    the decision's memory, and the metrics condition waits for the next evaluation."""

    decision: autoscaler.Decision | None = None
    record: AutoscalerStatus | None = None
    """`status.autoscaler` of the last evaluation."""
    metrics: MetricsHealth | None = None


@dataclass(frozen=True)
class Capacity:
    """The cluster's GPU nodes, their free GPUs (`capacity.Ledger`) and the claims on them, for the room a
    surge has: the same capacity gang admission reads."""

    nodes: tuple[capacity.NodeInfo, ...] = ()
    free: Mapping[str, int] = field(default_factory=dict)
    """Free GPUs per schedulable node."""
    claims: tuple[capacity.Claim, ...] = ()
    """Admitted gangs' unplaced workers and other fleets' unbound pods: a surge leaves them their room."""
    tolerations: tuple[capacity.Toleration, ...] = capacity.GPU_POD_TOLERATIONS
    """What the fleet's pods tolerate (from the builders): nodes with other taints offer nothing."""
    scope: tuple[str, ...] = ()
    """The only namespaces whose pods the operator may read (`capacity.Ledger.scope`); empty: all. When
    set, GPUs that pods elsewhere hold are invisible, so the free GPUs are unknown and no surge is
    offered: pods swap in place within the disruption budget, as when no GPU is free."""


@dataclass(frozen=True)
class Measurement:
    """What the metric source answered for the revisions a plan asked to measure."""

    revision: str
    canary: MetricSample = field(default_factory=MetricSample)
    baseline: MetricSample | None = None
    """None when there was no stable revision to compare with."""
    error: str | None = None
    """Why nothing could be measured (Prometheus unreachable or not configured)."""


@dataclass(frozen=True)
class RouteRead:
    """The fleet's HTTPRoute, as read from the API server."""

    route: Mapping[str, Any] | None = None
    """None when there is no such HTTPRoute."""
    read_error: str | None = None
    """The API server's message when it could not be read."""
    patch_error: str | None = None
    """The API server's message when the weights the last plan asked for could not be written."""


@dataclass(frozen=True)
class FleetObserved:
    """Everything one reconcile pass saw."""

    name: str
    namespace: str
    generation: int | None
    status: InferenceFleetStatus
    """The stored status (`policy.status.parse_status`)."""
    now: datetime
    spec: InferenceFleetSpec | None
    """None when the spec does not validate (`invalid` says why)."""
    invalid: str = ""
    revision: str = ""
    """The template's revision (`builders.inferencefleet.revision(spec)`)."""
    deployments: Mapping[str, RevisionState] = field(default_factory=dict)
    """The fleet's Deployments, by revision."""
    pods: PodSummary = field(default_factory=PodSummary)
    revision_pods: Mapping[str, RevisionPods] = field(default_factory=dict)
    templates_kept: Mapping[str, str | None] = field(default_factory=dict)
    """The fleet's ControllerRevisions: name -> the revision they keep (their revision label)."""
    memory: FleetMemory = field(default_factory=FleetMemory)
    reading: autoscaler.Reading | None = None
    """The autoscaler's metric, read this pass because an evaluation is due (None: none is due)."""
    next_evaluation_in: float | None = None
    """Seconds until the autoscaler's next evaluation; None with the autoscaler off."""
    measured: tuple[str, float] | None = None
    """The revision this process last measured, and how many seconds ago."""
    # Asked for by a plan (see the module's docstring).
    capacity: Capacity | None = None
    measurement: Measurement | None = None
    templates: Mapping[str, InferenceFleetSpec | None] = field(default_factory=dict)
    """Stored templates of revisions to rebuild, as the fleet's spec with them; None when the stored one
    is missing, unreadable or does not hash to its revision."""
    route: RouteRead | None = None
    held: tuple[accounting.Held, ...] = ()
    """The GPUs the fleet's pods hold or held, priced by their nodes (`policy.usage.held_of`)."""
    catalog: GpuCatalog = DEFAULT_CATALOG
    usage_checkpoint: timedelta = accounting.DEFAULT_CHECKPOINT
    measures_usage: bool = False
    """A metric source is configured: a fold asks what it measured over the segment."""
    usage_reading: accounting.UsageReading | None = None
    # What the objective derived (`policy.objective.derive_fleet`); `spec` already has its values.
    gpu_products: tuple[str, ...] | None = None
    """The GPU products the pods require by the objective's choice, when `resources.gpuType` is unset:
    a surge counts the same GPUs the scheduler will place them on."""
    policy: tuple[PolicyEntry, ...] = ()
    """`status.policy`."""
    network_policy: bool = False
    """The fleet's NetworkPolicy exists (it made one under `objective: privacy`)."""
    borrowing: arbitration.Borrowing | None = None
    """Training the fleet may borrow GPUs from, gathered when it autoscales and has pods without room
    or holds borrowed GPUs (`wanted`, `unschedulable`, `now` and `active` are filled in by `decide`)."""
    kueue_claims: tuple[kueue_claims.Claim, ...] = ()
    """The fleet's claim Workloads (`policy.kueue_claims`), from the caches."""
    kueue_served: bool = False
    """Kueue's Workload API is served (and readable): claims can be made."""
    kueue_blind: bool = False
    """Kueue's Workloads are watched but RBAC refuses to list them: claims may exist unseen, so the
    recorded ones are neither made nor withdrawn until they can be read."""
    kueue_names_in_use: frozenset[str] = frozenset()
    """Names of Workloads labelled for a fleet of this name but not this fleet's (an older fleet's
    claims, being deleted): new claims do not take them."""


# ---------------------------------------------------------------------------------------------------
# What to do about it.

ChildKind = Literal[
    "Service", "PodDisruptionBudget", "ControllerRevision", "Deployment", "RevisionService", "NetworkPolicy"
]


@dataclass(frozen=True)
class Apply:
    """Build a child with `kubeforge.builders.inferencefleet` and apply it (when it differs from the
    cached one)."""

    kind: ChildKind
    spec: InferenceFleetSpec
    """What it is built from: the fleet's spec, or a rebuilt revision's stored template."""
    revision: str = ""
    replicas: int = 0


@dataclass(frozen=True)
class Scale:
    """Set `spec.replicas` of a revision's Deployment, leaving its template as it is."""

    deployment: str
    replicas: int


@dataclass(frozen=True)
class Delete:
    kind: Literal["Deployment", "Service", "ControllerRevision", "PodDisruptionBudget", "NetworkPolicy"]
    name: str
    revision: str | None


Write = Apply | Scale | Delete


@dataclass(frozen=True)
class Measure:
    """Measure `revision` (and `baseline`, the stable one, to compare) with `spec`'s queries."""

    revision: str
    baseline: str | None
    spec: AnalysisSpec


@dataclass(frozen=True)
class RouteWeights:
    """The fleet's backends of HTTPRoute `name` (as read: `route`) are to carry `weights` (percent per
    revision) on `port`; backends of `revisions` (and the fleet's Service) are the fleet's."""

    name: str
    route: Mapping[str, Any]
    port: int
    weights: Mapping[str, int]
    revisions: frozenset[str]


@dataclass(frozen=True)
class FleetPlan:
    """What the controller does, in this order: the writes, the HTTPRoute's weights, the status (when
    it differs from the stored one), the events, the metrics. A plan that is not `complete` asks for an
    input instead and is not carried out."""

    status: InferenceFleetStatus
    writes: tuple[Write, ...] = ()
    route: RouteWeights | None = None
    events: tuple[Event, ...] = ()
    transitions: tuple[Condition, ...] = ()
    """Conditions whose status or reason changed (the transitions metric)."""
    outcomes: tuple[str, ...] = ()
    """Rollout outcomes to count (the rollout outcomes metric)."""
    evaluation: autoscaler.Decision | None = None
    """The autoscaler's decision of this pass, for its metrics and log."""
    memory: FleetMemory = field(default_factory=FleetMemory)
    """What to remember for the next pass."""
    in_rollout: bool = False
    """A rollout is under way (Progressing or Paused): freed GPUs may let its surge go on."""
    requeue_after: float | None = None
    needs_capacity: bool = False
    measure: Measure | None = None
    needs_templates: tuple[str, ...] = ()
    needs_route: str | None = None
    """The name of the HTTPRoute to read."""
    needs_usage: float | None = None
    """Seconds of the segment `status.usage` folds, over which to read the fleet's measurements."""
    lends: tuple[tuple[str, int], ...] = ()
    """GPUs borrowed (`lend`) or given back (`return`) this pass, asked of Kueue (`kueueAsk`) or given
    back to it (`kueueRelease`), for the lends metric."""
    claims_create: tuple[str, ...] = ()
    """Claim Workloads to make (names), one replica each (`policy.kueue_claims`)."""
    claims_delete: tuple[str, ...] = ()
    """Claim Workloads to delete."""

    @property
    def complete(self) -> bool:
        return (
            not self.needs_capacity
            and self.measure is None
            and not self.needs_templates
            and self.needs_route is None
            and self.needs_usage is None
        )


# ---------------------------------------------------------------------------------------------------
# The decision.


def decide(o: FleetObserved) -> FleetPlan:
    """The plan for one reconcile pass. Pure: the same observation gives the same plan."""
    spec = o.spec
    if spec is None:
        return _invalid(o, "InvalidSpec", o.invalid, FleetMemory(), None)
    evaluation, memory, desired = _autoscale(o, spec)
    problem = name_problem(o.name)
    if problem is not None:
        return _invalid(o, "InvalidName", problem, memory, evaluation)

    moving = _moving(o, spec)
    if moving and spec.resources.gpus > 0 and o.capacity is None:
        return FleetPlan(status=o.status, needs_capacity=True)
    surge = None
    unknown = moving and o.capacity is not None and bool(o.capacity.scope)
    if unknown:
        surge = _own_room(o, desired)
    elif moving and o.capacity is not None:
        surge = capacity.surge_room(
            spec.resources.gpus,
            spec.resources.gpu_type,
            o.capacity.nodes,
            o.capacity.free,
            o.capacity.claims,
            o.capacity.tolerations,
            products=o.gpu_products,
        )
    inputs = rollouts.RolloutInputs(
        spec=spec.rollout_spec,
        status=o.status.rollout,
        template_revision=o.revision,
        total_replicas=desired,
        now=o.now,
        revisions=_rollout_revisions(o),
        template_image=spec.image,
        max_unavailable=rollouts.resolve_max_unavailable(spec.disruption.max_unavailable, desired),
        surge_capacity=surge,
    )
    limits = spec.rollout_spec.analysis
    if o.measurement is not None and limits is not None:
        inputs = replace(inputs, analysis=_verdict(o.measurement, limits, o.now))
    plan = rollouts.plan_rollout(inputs)
    if (
        o.measurement is None
        and limits is not None
        and plan.analyze is not None
        and rollouts.analysis_due(plan.status, limits.interval_seconds, o.now)
    ):
        return FleetPlan(status=o.status, measure=Measure(plan.analyze, plan.baseline, limits))

    rebuild = [r for r, n in plan.replicas.items() if n > 0 and r != o.revision and r not in o.deployments]
    wanted = tuple(sorted(r for r in rebuild if r not in o.templates))
    if wanted:
        return FleetPlan(status=o.status, needs_templates=wanted)
    writes, missing = _revision_writes(o, spec, plan)

    extra: list[ConditionUpdate] = []
    borrowed = _borrow(o, spec, desired)
    asked = _ask(o, spec, desired, borrowed)
    kueue_word = asked.message if asked is not None and asked.record is not None else ""
    if borrowed is not None and (borrowed.why_short or kueue_word) and o.pods.unschedulable:
        # Why training lent no more comes first (the scheduler's message can fill the condition's 1,024
        # characters on its own), then what Kueue was asked, then the scheduler's reason, which users
        # and alerts look for.
        parts = [f"{o.pods.unschedulable} pod(s) cannot be scheduled"]
        if borrowed.why_short:
            parts.append(f"training lends no more: {borrowed.why_short}")
        if kueue_word:
            parts.append(kueue_word)
        parts.append(f"scheduler: {o.pods.unschedulable_message}")
        reason = "WaitingForKueue" if kueue_word else "NoLendableGpus"
        extra.append(ConditionUpdate("CapacityLimited", "True", reason, "; ".join(parts)[:1024]))
    route: RouteWeights | None = None
    if spec.rollout is not None and spec.rollout.http_route is not None:
        backends, routed = _backends(o, spec, plan)
        writes += backends
        if routed is None:
            if o.route is None:
                return FleetPlan(status=o.status, needs_route=spec.rollout.http_route.name)
            route, routed = _weights(o.route, o.name, spec.rollout.http_route.name, spec.port, plan)
        extra.append(routed)
    if missing and plan.degraded is None:
        extra.append(ConditionUpdate("Degraded", "True", "RevisionNotFound", missing))
    budget = _budget_condition(o, spec, memory)
    if budget is not None:
        extra.append(budget)
    if unknown and o.capacity is not None and not o.pods.unschedulable:
        # Pods the scheduler cannot place say more than this (`CapacityLimited` from the pods).
        extra.append(_capacity_unknown(o.capacity.scope))

    status = compute_status(
        spec,
        name=o.name,
        namespace=o.namespace,
        generation=o.generation,
        revision=o.revision,
        desired=desired,
        revisions=_judged_revisions(o, plan),
        pods=o.pods,
        metrics=memory.metrics if spec.autoscaler_on else None,
        autoscaler=_autoscaler_record(o, memory) if spec.autoscaler_on else None,
        current=o.status,
        now=o.now,
        serving=plan.status.stable_revision or o.revision,
        rollout=RolloutConditions(
            active=plan.status.phase in rollouts.ACTIVE,
            message=plan.status.message,
            progressing=plan.progressing,
            degraded=plan.degraded,
        ),
        rollout_status=plan.status,
        extra=extra,
    )
    if borrowed is not None:
        held = [arbitration.stored(h) for h in borrowed.held]
        status = status.model_copy(update={"borrowed": held or None})
    elif o.status.borrowed:
        status = status.model_copy(update={"borrowed": o.status.borrowed})
    if asked is not None:
        status = status.model_copy(update={"kueue_claim": _claim_status(asked, o.kueue_claims)})
    elif o.status.kueue_claim is not None:
        status = status.model_copy(update={"kueue_claim": o.status.kueue_claim})
    return _finish(
        o,
        status,
        memory,
        evaluation,
        writes=tuple(writes),
        route=route,
        rollout_events=plan.events,
        in_rollout=plan.status.phase in rollouts.ACTIVE,
        rollout_due=_rollout_due(o, plan, limits),
        borrowed=borrowed,
        asked=asked,
    )


def _invalid(
    o: FleetObserved, reason: str, message: str, memory: FleetMemory, evaluation: autoscaler.Decision | None
) -> FleetPlan:
    """A fleet the operator cannot build: Degraded, nothing written but the conditions."""
    status = invalid_status(reason, message, generation=o.generation, current=o.status, now=o.now)
    rollout = o.status.rollout
    in_rollout = rollout is not None and rollout.phase in rollouts.ACTIVE
    return _finish(o, status, memory, evaluation, in_rollout=in_rollout)


def _finish(
    o: FleetObserved,
    status: InferenceFleetStatus,
    memory: FleetMemory,
    evaluation: autoscaler.Decision | None,
    *,
    writes: tuple[Write, ...] = (),
    route: RouteWeights | None = None,
    rollout_events: tuple[Event, ...] = (),
    in_rollout: bool,
    rollout_due: float | None = None,
    borrowed: arbitration.Borrowed | None = None,
    asked: kueue_claims.Asked | None = None,
) -> FleetPlan:
    """The plan around a decided status (with its usage folded in): the news in it, and when to come
    back."""
    # A spec the operator cannot read lists no pods: the usage stays as stored until it can.
    ledger = (
        accounting.account(
            o.status.usage,
            o.held,
            o.now,
            currency=o.catalog.currency,
            checkpoint=o.usage_checkpoint,
            reading=o.usage_reading,
        )
        if o.spec is not None
        else accounting.Accounting(o.status.usage)
    )
    since = parse_time(o.status.usage.accounted_until) if o.status.usage is not None else None
    if ledger.folded and o.measures_usage and o.usage_reading is None and since is not None:
        return FleetPlan(status=o.status, needs_usage=max(1.0, (o.now - since).total_seconds()))
    status = status.model_copy(update={"usage": ledger.usage})
    if list(o.policy) != status.policy:
        status = status.model_copy(update={"policy": list(o.policy)})
    events = [*rollout_events, *condition_events(o.status.conditions, status.conditions)]
    lends: list[tuple[str, int]] = []
    if borrowed is not None:
        for take in borrowed.lent:
            message = (
                f"borrowed {take.workers} worker(s) ({take.gpus} GPUs) of TrainingJob {take.job} for "
                f"{take.replicas} replica(s); it shrinks to make room"
            )
            events.append(Event("Normal", "BorrowedGpus", message))
            lends.append(("lend", take.gpus))
        for entry, why in borrowed.returned:
            message = f"gave back {entry.gpus} GPUs of TrainingJob {entry.job}: {why}"
            events.append(Event("Normal", "ReturnedGpus", message))
            lends.append(("return", entry.gpus))
    creates: tuple[str, ...] = ()
    if asked is not None:
        # GPUs per replica, as the arbitration snapshot counts them.
        gpus = o.borrowing.gpus if o.borrowing is not None else o.spec.resources.gpus if o.spec else 0
        if asked.asked and asked.record is not None:
            message = (
                f"asked Kueue through LocalQueue {asked.record.queue} for {asked.asked} replica(s)"
                f" ({gpus} GPUs each): Kueue-admitted training holds the GPUs the fleet needs"
            )
            events.append(Event("Normal", "AskedKueue", message))
            lends.append(("kueueAsk", asked.asked * gpus))
        if asked.released:
            recorded = o.status.kueue_claim
            held = recorded.replicas if recorded is not None else len(asked.delete)
            events.append(
                Event("Normal", "ReleasedKueueClaim", f"withdrew {held} Kueue claim(s): {asked.released}")
            )
            lends.append(("kueueRelease", held * gpus))
        creates = kueue_claims.names_to_create(o.name, asked.create, o.kueue_claims, o.kueue_names_in_use)
    scaled = scale_event(evaluation) if evaluation is not None else None
    if scaled is not None:
        events.append(scaled)
    waits = [w for w in (o.next_evaluation_in, rollout_due, ledger.requeue_after) if w is not None]
    return FleetPlan(
        status=status,
        writes=writes,
        route=route,
        events=tuple(events),
        transitions=changed_conditions(o.status.conditions, status.conditions),
        outcomes=outcomes(rollout_events),
        evaluation=evaluation,
        memory=memory,
        in_rollout=in_rollout,
        requeue_after=max(0.0, min(waits)) if waits else None,
        lends=tuple(lends),
        claims_create=creates,
        claims_delete=asked.delete if asked is not None else (),
    )


# -- the autoscaler ------------------------------------------------------------------------------------


def _autoscale(
    o: FleetObserved, spec: InferenceFleetSpec
) -> tuple[autoscaler.Decision | None, FleetMemory, int]:
    """This pass's evaluation (when a reading is due), what to remember, and the replicas in force.

    Between evaluations the count is the last decision (in memory, else `status.autoscaler`), else
    what the Deployments run."""
    auto = spec.autoscaling
    if auto is None or not spec.autoscaler_on:
        return None, FleetMemory(), spec.replicas
    # During a rollout the fleet's replicas are split between revisions: the autoscaler decides the
    # total, which is what the last pass asked for.
    deployed = o.status.desired_replicas
    if deployed is None and o.deployments:
        deployed = sum(s.spec_replicas for s in o.deployments.values())
    current = deployed if deployed is not None else auto.min_replicas
    memory = o.memory
    evaluation: autoscaler.Decision | None = None
    if o.reading is not None:
        cap = _budget_cap(o, spec)
        observed = autoscaler.Observed(
            ready=o.pods.ready,
            current=current,
            scheduled=o.pods.scheduled,
            unschedulable=o.pods.unschedulable,
            budget_replicas=cap.replicas if cap is not None else None,
            budget_message=cap.message if cap is not None else "",
        )
        reading = autoscaler.per_replica(auto, o.reading, o.pods.ready)
        evaluation = autoscaler.decide(auto, reading, observed, _autoscaler_memory(o), o.now)
        memory = FleetMemory(
            decision=evaluation,
            record=AutoscalerStatus.model_validate(
                autoscaler.status_record(auto, evaluation, observed, o.now)
            ),
            metrics=MetricsHealth(
                unavailable=evaluation.metrics_unavailable,
                reason=evaluation.unavailable_reason or "MetricsAvailable",
                message=evaluation.message
                if evaluation.metrics_unavailable
                else f"{auto.metric or 'query'} read from Prometheus",
            ),
        )
    last = memory.decision.memory if memory.decision is not None else _autoscaler_memory(o)
    desired = autoscaler.baseline(auto, autoscaler.Observed(ready=0, current=current), last)
    return evaluation, memory, desired


def _budget_cap(o: FleetObserved, spec: InferenceFleetSpec) -> accounting.BudgetCap | None:
    """The most replicas `spec.budget` buys, at what the fleet's GPUs cost and draw now."""
    if spec.budget is None:
        return None
    per_replica = accounting.replica_rates(
        o.status.usage, spec.resources.gpus, spec.resources.gpu_type, o.catalog
    )
    return accounting.fleet_budget_cap(spec.budget, *per_replica)


def _budget_condition(
    o: FleetObserved, spec: InferenceFleetSpec, memory: FleetMemory
) -> ConditionUpdate | None:
    """`BudgetLimited` for a fleet with a budget: True while the budget holds the autoscaler back (the
    last evaluation's word, else what the stored status says after a restart)."""
    if spec.budget is None:
        return None
    decision = memory.decision
    if decision is not None:
        limited = decision.budget_limited
        message = "; ".join(n for n in decision.notes if "spec.budget" in n) or decision.message
    else:
        record = o.status.autoscaler
        limited = record is not None and record.reason == "BudgetLimited"
        message = (record.message or "") if record is not None else ""
    if limited:
        return ConditionUpdate("BudgetLimited", "True", "BudgetLimited", message[:1024])
    return ConditionUpdate("BudgetLimited", "False", "WithinBudget", "the budget buys what the load asks for")


def _borrow(o: FleetObserved, spec: InferenceFleetSpec, desired: int) -> arbitration.Borrowed | None:
    """What the fleet holds of training's GPUs after this pass (None: nothing to decide about)."""
    mine = [arbitration.held_of(e) for e in o.status.borrowed or ()]
    now = o.now.timestamp()
    if o.borrowing is None:
        if not mine or spec.autoscaler_on:
            return None  # the controller gathers a snapshot whenever there is something to decide
        return arbitration.borrow(
            arbitration.Borrowing("", 0, 0, None, 0, 0, (), now=now, active=False), mine
        )
    claim = o.status.kueue_claim
    snapshot = replace(
        o.borrowing,
        wanted=desired,
        unschedulable=o.pods.unschedulable,
        scheduled=o.pods.scheduled,
        now=now,
        active=spec.autoscaler_on,
        claimed_for=claim.for_replicas if claim is not None else 0,
    )
    return arbitration.borrow(snapshot, mine)


def _ask(
    o: FleetObserved, spec: InferenceFleetSpec, desired: int, borrowed: arbitration.Borrowed | None
) -> kueue_claims.Asked | None:
    """What the fleet asks Kueue for after this pass (None: it never asked and is not asking)."""
    stored = o.status.kueue_claim
    if o.kueue_blind or (spec.kueue_queue_name is None and stored is None and not o.kueue_claims):
        return None
    record = (
        kueue_claims.Record(
            stored.queue,
            stored.replicas,
            stored.for_replicas,
            arbitration.epoch_seconds(stored.since) or o.now.timestamp(),
            arbitration.epoch_seconds(stored.calm_since),
        )
        if stored is not None
        else None
    )
    b = o.borrowing
    asking = kueue_claims.Asking(
        queue=spec.kueue_queue_name,
        wanted=desired,
        short=borrowed.short if borrowed is not None else 0,
        holders=kueue_claims.holders(b.jobs, b.priority, b.products, b.node_products)
        if b is not None
        else (),
        claims=o.kueue_claims,
        now=o.now.timestamp(),
        return_after=b.return_after if b is not None else arbitration.Borrowing.return_after,
        active=spec.autoscaler_on,
        served=o.kueue_served,
    )
    return kueue_claims.ask(asking, record)


def _claim_status(asked: kueue_claims.Asked, claims: tuple[kueue_claims.Claim, ...]) -> KueueClaim | None:
    record = asked.record
    if record is None:
        return None
    live = [c for c in claims if not c.deleting and c.name not in asked.delete]
    waiting = next((c.message for c in live if not c.admitted and c.message), None)
    return KueueClaim(
        queue=record.queue,
        replicas=record.replicas,
        admitted=sum(1 for c in live if c.admitted),
        for_replicas=record.for_replicas,
        since=arbitration.stamp(record.since),
        calm_since=arbitration.stamp(record.calm_since) if record.calm_since is not None else None,
        message=waiting[:1024] if waiting else None,
    )


def _autoscaler_record(o: FleetObserved, memory: FleetMemory) -> AutoscalerStatus | None:
    """`status.autoscaler`: the last evaluation's, else what is stored (a restarted operator)."""
    return memory.record if memory.record is not None else o.status.autoscaler


def _autoscaler_memory(o: FleetObserved) -> autoscaler.Memory:
    if o.memory.decision is not None:
        return o.memory.decision.memory
    return autoscaler.memory_from_status(o.status.autoscaler)


# -- the rollout ---------------------------------------------------------------------------------------


def _moving(o: FleetObserved, spec: InferenceFleetSpec) -> bool:
    """Whether replicas may move between revisions, so that free GPUs bound the surge."""
    previous = o.status.rollout
    return (
        previous is None
        or previous.phase in rollouts.ACTIVE
        or previous.stable_revision != o.revision
        or len(o.deployments) > 1
        or spec.rollout_spec.target_revision is not None
    )


def _capacity_unknown(scope: tuple[str, ...]) -> ConditionUpdate:
    """`CapacityLimited` while a rollout cannot know which GPUs are free (a namespace-restricted
    operator): it swaps pods in place rather than surge onto GPUs that may be taken."""
    message = (
        f"free GPUs are unknown: the operator may read pods only in {', '.join(scope)}, so GPUs used "
        "elsewhere are invisible to it; pods swap in place within the disruption budget instead of "
        "surging (grant it list and watch on pods in all namespaces to surge)"
    )
    return ConditionUpdate("CapacityLimited", "True", "CapacityUnknown", message)


def _own_room(o: FleetObserved, desired: int) -> int:
    """The surge room when the free GPUs are unknown: only the GPUs the fleet's own removed pods gave
    back (its count minus the pods that hold a GPU on a node), so it never grows past its count and
    pods swap in place. Whether another namespace took a freed GPU meanwhile is not known either; the
    new pod then waits Pending, as in any swap."""
    bound = sum(p.alive - p.pending + p.terminating for p in o.revision_pods.values())
    return max(0, desired - bound)


def _rollout_revisions(o: FleetObserved) -> dict[str, rollouts.RevisionState]:
    out: dict[str, rollouts.RevisionState] = {}
    for rev, state in o.deployments.items():
        pods = o.revision_pods.get(rev, RevisionPods())
        out[rev] = rollouts.RevisionState(
            replicas=state.spec_replicas,
            ready=state.ready,
            # Pods without a node yet, and pods asked for that the Deployment controller has not made
            # yet: both are about to take free GPUs, which must not be counted twice for a surge.
            pending=pods.pending + max(0, state.spec_replicas - pods.alive),
            terminating=pods.terminating,
        )
    return out


def _verdict(m: Measurement, limits: AnalysisSpec, now: datetime) -> AnalysisRun:
    """The measurement judged against the analysis limits, as the rollout takes it."""
    if m.error is not None:
        outcome = analysis.unavailable(m.error)
    else:
        outcome = analysis.evaluate(m.canary, m.baseline, analysis.Thresholds.from_spec(limits))
    return outcome.record(revision=m.revision, now=now)


def _rollout_due(o: FleetObserved, plan: rollouts.RolloutPlan, limits: AnalysisSpec | None) -> float | None:
    """Seconds until the rollout wants a pass; a measurement is due an interval after the last one,
    whatever passes ran in between."""
    due = plan.requeue_after
    measured = o.measured
    if due is not None and limits is not None and measured is not None and measured[0] == plan.analyze:
        due = min(due, limits.interval_seconds - measured[1])
    return due


def _revision_writes(
    o: FleetObserved, spec: InferenceFleetSpec, plan: rollouts.RolloutPlan
) -> tuple[list[Write], str]:
    """The fleet's Service, PDB and template, every revision Deployment at the replicas the plan asks
    for, drained revisions removed and templates out of the history dropped; and a message naming the
    revisions that could not be rebuilt ("" when none)."""
    writes: list[Write] = [
        Apply("Service", spec),
        Apply("PodDisruptionBudget", spec)
        if budget_protects(spec)
        else Delete("PodDisruptionBudget", o.name, None),
        Apply("ControllerRevision", spec, revision=o.revision),
    ]
    if spec.privacy is not None:
        writes.append(Apply("NetworkPolicy", spec))
    elif o.network_policy:
        writes.append(Delete("NetworkPolicy", o.name, None))

    def shrinking_first(item: tuple[str, int]) -> tuple[bool, str]:
        # Scale-downs before scale-ups: the replicas asked for never exceed the plan's surge, not even
        # between two writes (and in a swap the old pod is deleted before the new one exists).
        state = o.deployments.get(item[0])
        return (item[1] >= (state.spec_replicas if state is not None else 0), item[0])

    problems: list[str] = []
    for rev, replicas in sorted(plan.replicas.items(), key=shrinking_first):
        state = o.deployments.get(rev)
        if rev == o.revision:
            writes.append(Apply("Deployment", spec, revision=rev, replicas=replicas))
        elif state is not None:
            if state.spec_replicas != replicas:
                writes.append(Scale(state.name, replicas))
        elif replicas > 0:
            stored = o.templates.get(rev)
            if stored is None:
                problems.append(f"the template of revision {rev} is not kept; it cannot be rebuilt")
            else:
                writes.append(Apply("Deployment", stored, revision=rev, replicas=replicas))
    for gone in plan.delete:
        state = o.deployments.get(gone)
        if state is not None:
            writes.append(Delete("Deployment", state.name, gone))
            writes.append(Delete("Service", revision_service_name(o.name, gone), gone))
    rollout = plan.status
    keep = {
        o.revision,
        rollout.stable_revision,
        rollout.canary_revision,
        *(e.revision for e in rollout.history),
    }
    for name, rev_kept in sorted(o.templates_kept.items()):
        if rev_kept not in keep:
            writes.append(Delete("ControllerRevision", name, rev_kept))
    return writes, "; ".join(problems)


def budget_protects(spec: InferenceFleetSpec) -> bool:
    """Whether a PodDisruptionBudget could ever refuse an eviction of this fleet's pods. One whose
    maxUnavailable covers every replica the fleet can have (a one-replica fleet with the default
    budget of 1) allows every eviction, exactly as no budget does, so the fleet gets none: it would
    cost the API server two writes (the budget and the disruption controller's status) and a watch
    event per pod change, for nothing. The most replicas, not the current ones, decide, so an
    autoscaled fleet keeps its budget while it sits at one replica."""
    scaling = spec.autoscaling
    most = scaling.max_replicas if scaling is not None and scaling.enabled else spec.replicas
    return rollouts.resolve_max_unavailable(spec.disruption.max_unavailable, most) < most


def _judged_revisions(o: FleetObserved, plan: rollouts.RolloutPlan) -> list[RevisionState]:
    """The revisions the status counts: those the plan keeps that run or should, and the stable one."""
    stable = plan.status.stable_revision or o.revision
    judged: list[RevisionState] = []
    for rev, wanted in plan.replicas.items():
        state = o.deployments.get(rev)
        if state is None:
            if rev != o.revision:
                continue
            state = RevisionState(
                revision=rev, name=deployment_name(o.name, rev), spec_replicas=wanted, current=False
            )
        if rev == stable or wanted or state.replicas or state.ready:
            judged.append(state)
    return judged


# -- traffic -------------------------------------------------------------------------------------------


def _serving(plan: rollouts.RolloutPlan) -> set[str]:
    serving = {r for r, w in plan.weights.items() if w > 0}
    return serving | {r for r in (plan.status.stable_revision, plan.status.canary_revision) if r}


def _backends(
    o: FleetObserved, spec: InferenceFleetSpec, plan: rollouts.RolloutPlan
) -> tuple[list[Write], ConditionUpdate | None]:
    """A Service per serving revision (the HTTPRoute's backends); `TrafficRouted` False when one
    cannot have a name."""
    services: list[Write] = []
    for rev in sorted(_serving(plan)):
        problem = revision_service_problem(o.name, rev)
        if problem is not None:
            return services, ConditionUpdate("TrafficRouted", "False", "InvalidBackendName", problem)
        services.append(Apply("RevisionService", spec, revision=rev))
    return services, None


def _weights(
    read: RouteRead, fleet: str, route_name: str, port: int, plan: rollouts.RolloutPlan
) -> tuple[RouteWeights | None, ConditionUpdate]:
    """The HTTPRoute's weights to set, and the `TrafficRouted` condition."""
    if read.read_error is not None:
        reason, message = "HTTPRouteUnreadable", f"HTTPRoute {route_name}: {read.read_error}"
        return None, ConditionUpdate("TrafficRouted", "False", reason, message)
    if read.route is None:
        message = (
            f"HTTPRoute {route_name} not found (is the Gateway API installed?); traffic is split by"
            " ready replicas only"
        )
        return None, ConditionUpdate("TrafficRouted", "False", "HTTPRouteNotFound", message)
    if read.patch_error is not None:
        reason, message = "HTTPRoutePatchFailed", f"HTTPRoute {route_name}: {read.patch_error}"
        return None, ConditionUpdate("TrafficRouted", "False", reason, message)
    weights = dict(plan.weights)
    revisions = frozenset({*plan.replicas, *_serving(plan)})
    if not routes_to_fleet(read.route, fleet, {*revisions, *weights}):
        message = (
            f"HTTPRoute {route_name} has no backendRef to Service {fleet} (or a revision Service of it):"
            " add one for the operator to weight; traffic is split by ready replicas only"
        )
        return None, ConditionUpdate("TrafficRouted", "False", "NoFleetBackend", message)
    text = ", ".join(f"{r}={w}%" for r, w in sorted(weights.items()) if w > 0)
    return (
        RouteWeights(route_name, read.route, port, weights, revisions),
        ConditionUpdate("TrafficRouted", "True", "WeightsSet", f"HTTPRoute {route_name}: {text}"),
    )
