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
