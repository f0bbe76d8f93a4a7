"""The e2e harness's rewrite of Kueue's webhook manifests for a manager on loopback (no cluster needed)."""

from __future__ import annotations

import base64

import yaml

from kubeforge_e2e.kueue import MUTATING, NAMESPACE_LABEL, VALIDATING, webhook_configurations


def _hook(name: str, path: str) -> dict[str, object]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "clientConfig": {"service": {"name": "webhook-service", "namespace": "system", "path": path}},
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "rules": [{"operations": ["CREATE"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}],
    }


MANIFESTS = yaml.safe_dump_all(
    [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "mutating-webhook-configuration"},
            "webhooks": [
                _hook("mjob.kb.io", "/mutate-batch-v1-job"),
                _hook("mpod.kb.io", "/mutate--v1-pod"),
                _hook("mdeployment.kb.io", "/mutate-apps-v1-deployment"),
                _hook("mworkload.kb.io", "/mutate-kueue-x-k8s-io-v1beta2-workload"),
            ],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "validating-webhook-configuration"},
            "webhooks": [
                _hook("vjob.kb.io", "/validate-batch-v1-job"),
                _hook("vclusterqueue.kb.io", "/validate-kueue-x-k8s-io-v1beta2-clusterqueue"),
                _hook("vrayjob.kb.io", "/validate-ray-io-v1-rayjob"),
            ],
        },
    ]
)


def test_only_jobs_and_kueues_own_kinds_are_served_by_url_with_our_ca() -> None:
    ca = b"-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"
    configs = webhook_configurations(MANIFESTS, "https://127.0.0.1:9443", ca)
    by_name = {c["metadata"]["name"]: c for c in configs}
    assert set(by_name) == {MUTATING, VALIDATING}
    hooks = {h["name"]: h for c in configs for h in c["webhooks"]}
    assert set(hooks) == {"mjob.kb.io", "mworkload.kb.io", "vjob.kb.io", "vclusterqueue.kb.io"}
    for hook in hooks.values():
        assert "service" not in hook["clientConfig"]
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:9443/")
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
    assert hooks["mjob.kb.io"]["clientConfig"]["url"] == "https://127.0.0.1:9443/mutate-batch-v1-job"
    # A Kueue that is down must never block the Jobs of namespaces that do not use it.
    for name in ("mjob.kb.io", "vjob.kb.io"):
        assert hooks[name]["namespaceSelector"] == {"matchLabels": {NAMESPACE_LABEL: "true"}}
    assert "namespaceSelector" not in hooks["vclusterqueue.kb.io"]
