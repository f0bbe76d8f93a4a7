"""kubeforge_autoscaler_target: the target the alerts and the dashboard compare a fleet's metric with."""

from __future__ import annotations

from prometheus_client import generate_latest

from kubeforge.metrics import exposition


def exposed() -> str:
    return generate_latest(exposition.REGISTRY).decode()


def test_one_target_series_per_fleet_dropped_with_the_fleet() -> None:
    exposition.record_target("team-t", "chat", "latencyP95", 0.8)
    exposition.record_target("team-t", "code", "ttftP95", 0.5)
    assert 'kubeforge_autoscaler_target{metric="latencyP95",name="chat",namespace="team-t"} 0.8' in exposed()
    # The fleet switches metric: the old series goes, so a join on (namespace, name) stays one-to-one.
    exposition.record_target("team-t", "chat", "queueDepth", 4)
    text = exposed()
    assert 'metric="latencyP95",name="chat"' not in text
    assert 'kubeforge_autoscaler_target{metric="queueDepth",name="chat",namespace="team-t"} 4.0' in text
    exposition.forget("InferenceFleet", "team-t", "chat")
    text = exposed()
    assert 'name="chat",namespace="team-t"' not in text
    assert 'kubeforge_autoscaler_target{metric="ttftP95",name="code",namespace="team-t"} 0.5' in text
    exposition.forget("InferenceFleet", "team-t", "code")


def test_an_objects_series_go_with_it_and_not_with_an_object_of_another_kind_and_name() -> None:
    exposition.TRAINING_GPU_HOURS.labels("team-t", "x").set(3.0)
    exposition.AUTOSCALER_DESIRED.labels("team-t", "x").set(4)
    exposition.record_target("team-t", "x", "queueDepth", 4)
    exposition.forget("InferenceFleet", "team-t", "x")
    text = exposed()
    assert 'kubeforge_trainingjob_gpu_hours{name="x",namespace="team-t"} 3.0' in text
    assert 'kubeforge_autoscaler_desired_replicas{name="x",namespace="team-t"}' not in text
    assert 'kubeforge_autoscaler_target{metric="queueDepth",name="x"' not in text
    exposition.forget("TrainingJob", "team-t", "x")
    assert 'name="x",namespace="team-t"' not in exposed()


def test_a_fleets_autoscaler_series_go_when_its_autoscaler_does() -> None:
    exposition.AUTOSCALER_DESIRED.labels("team-t", "y").set(4)
    exposition.AUTOSCALER_METRIC.labels("team-t", "y").set(16)
    exposition.record_target("team-t", "y", "queueDepth", 4)
    exposition.forget_autoscaler("team-t", "y")
    assert 'name="y",namespace="team-t"' not in exposed()
    exposition.forget_autoscaler("team-t", "y")  # nothing left to drop is no error
