"""Kubernetes manifests: kustomize renders them, the schemas of a named Kubernetes version accept
every document (strict: no unknown fields), and the shape the design asks for is there."""

from __future__ import annotations

import copy
import re

import kubernetes_validate
import pytest
from deploy_helpers import K8S, KUBERNETES_VERSION, OVERLAYS, by_kind, containers, one, pod_specs, rendered

FLOWS = ("assessment", "judge")


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_there_is_an_example_overlay():
    assert K8S / "overlays" / "example" in OVERLAYS


@pytest.mark.parametrize("path", [K8S / "base", *OVERLAYS], ids=lambda p: p.name)
def test_renders_and_validates_strictly(path):
    docs = rendered(path)
    assert docs
    errors = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            validate(doc)
        except kubernetes_validate.SchemaNotFoundError as exc:  # an unknown kind must not pass silently
            errors.append(f"{name}: {exc.message}")
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_strict_validation_rejects_unknown_fields(example):
    """Control: the validator used above does reject a typo, so its passes mean something."""
    sts = copy.deepcopy(one(example, "StatefulSet", "cjflow-assessment"))
    sts["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(sts)


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def flow_container(sts: dict) -> dict:
    return next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "flow")


@pytest.mark.parametrize("flow", FLOWS)
def test_statefulset_forms_a_bytewax_cluster(example, flow):
    sts = one(example, "StatefulSet", f"cjflow-{flow}")
    spec = sts["spec"]
    headless = one(example, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert spec["serviceName"] == f"{sts['metadata']['name']}-headless", "start-flow.sh derives the name"
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in headless["spec"]["selector"].items())
    assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    assert spec["podManagementPolicy"] == "Parallel"
    container = flow_container(sts)
    env = env_of(container)
    # the process count in the addresses follows the replica count
    assert env["BYTEWAX_REPLICAS"]["value"] == str(spec["replicas"])
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    cluster_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "cluster")
    assert env["CLUSTER_PORT"]["value"] == str(cluster_port)
    assert any(p["targetPort"] in ("cluster", cluster_port) for p in headless["spec"]["ports"])
    assert container["command"][-2:] == ["/opt/cjflow/scripts/start-flow.sh", flow]


def test_example_overlay_scales_out(example):
    assert all(sts["spec"]["replicas"] >= 2 for sts in by_kind(example, "StatefulSet"))


@pytest.mark.parametrize("flow", FLOWS)
def test_recovery_volume_and_init(example, flow):
    sts = one(example, "StatefulSet", f"cjflow-{flow}")
    spec = sts["spec"]["template"]["spec"]
    claims = {c["metadata"]["name"]: c for c in sts["spec"]["volumeClaimTemplates"]}
    assert "recovery" in claims
    config = next(d for d in by_kind(example, "ConfigMap") if d["metadata"]["name"].startswith("cjflow-config"))
    recovery_dir = config["data"]["CJFLOW_RECOVERY_DIR"]
    init = next(c for c in spec["initContainers"] if c["name"] == "init-recovery")
    assert init["command"][-1].endswith("init-recovery.sh")
    for c in (init, flow_container(sts)):
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["recovery"] == recovery_dir, c["name"]
        assert any(ref.get("configMapRef", {}).get("name") == config["metadata"]["name"] for ref in c["envFrom"])
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}


@pytest.mark.parametrize("flow", FLOWS)
def test_probes_and_metrics_port(example, flow):
    sts = one(example, "StatefulSet", f"cjflow-{flow}")
    container = flow_container(sts)
    config = next(d for d in by_kind(example, "ConfigMap") if d["metadata"]["name"].startswith("cjflow-config"))
    metrics_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    assert str(metrics_port) == config["data"]["CJFLOW_METRICS_PORT"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/metrics" and http["port"] in ("metrics", metrics_port), probe
    service = one(example, "Service", "cjflow-metrics")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["ports"][0]["targetPort"] in ("metrics", metrics_port)


def test_every_container_is_locked_down(example):
    """Non-root, read-only root filesystem with a writable /tmp, no privilege escalation,
    resources set: the Pod Security "restricted" profile the example namespace enforces."""
    workloads = pod_specs(example)
    assert {w["metadata"]["name"] for w, _ in workloads} >= {
        "cjflow-assessment", "cjflow-judge", "cjflow-db-migrate", "cjflow-topics-create"
    }
    for workload, spec in workloads:
        name = workload["metadata"]["name"]
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in containers(spec):
            sc = c["securityContext"]
            where = f"{name}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in c["volumeMounts"]), where
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], where
            assert c["resources"]["limits"]["memory"], where
    namespace = by_kind(example, "Namespace")[0]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


PINNED_IMAGE = re.compile(r"[\w.\-/:]+:[\w.\-]+(@sha256:[0-9a-f]{64})?|[\w.\-/:]+@sha256:[0-9a-f]{64}")


def test_images_are_pinned(example):
    for workload, spec in pod_specs(example):
        for c in containers(spec):
            image = c["image"]
            assert PINNED_IMAGE.fullmatch(image), f"{image}: give a tag or a digest"
            assert not image.endswith(":latest"), image


def test_secrets_are_mounted_as_files_never_inlined(example):
    assert not by_kind(example, "Secret"), "secrets are created out of band (docs/deploy.md), not committed"
    for workload, spec in pod_specs(example):
        secret_volumes = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        if secret_volumes:
            # A Secret's files are root-owned; without fsGroup a non-root user cannot read
            # files of a mode like 0440, and the pod fails at start-up.
            name = workload["metadata"]["name"]
            modes = {v["secret"].get("defaultMode", 0o644) for v in spec["volumes"] if "secret" in v}
            if any(not mode & 0o004 for mode in modes):
                assert spec["securityContext"].get("fsGroup") == spec["securityContext"]["runAsGroup"], name
        for c in containers(spec):
            for e in c.get("env", []):
                assert "secretKeyRef" not in e.get("valueFrom", {}), f"{e['name']}: use a *_FILE variable"
                if e["name"].endswith("_FILE"):
                    mounts = [m for m in c["volumeMounts"] if e["value"].startswith(m["mountPath"] + "/")]
                    assert mounts and mounts[0]["name"] in secret_volumes, f"{e['name']} is not on a Secret volume"
    judge = one(example, "StatefulSet", "cjflow-judge")["spec"]["template"]["spec"]
    secret_names = {v["secret"]["secretName"] for v in judge["volumes"] if "secret" in v}
    assert {"cjflow-anthropic", "cjflow-openai"} <= secret_names


def test_migration_and_topic_jobs(example):
    migrate = one(example, "Job", "cjflow-db-migrate")["spec"]["template"]["spec"]
    assert migrate["containers"][0]["command"] == ["cjflow", "db", "upgrade"]
    assert migrate["restartPolicy"] in ("OnFailure", "Never")
    # The migration sets the flows' role's password from the Secret the flows log in with
    # (without it the app role has none and the flows cannot connect).
    env = {e["name"]: e["value"] for e in migrate["containers"][0]["env"]}
    mount = next(m for m in migrate["containers"][0]["volumeMounts"]
                 if env["CJFLOW_APP_PASSWORD_FILE"].startswith(m["mountPath"] + "/"))
    volume = next(v for v in migrate["volumes"] if v["name"] == mount["name"])
    assessment = one(example, "StatefulSet", "cjflow-assessment")["spec"]["template"]["spec"]
    flow_db = next(v for v in assessment["volumes"] if v.get("secret", {}).get("secretName") == "cjflow-db")
    assert volume["secret"]["secretName"] == flow_db["secret"]["secretName"] == "cjflow-db"
    topics = one(example, "Job", "cjflow-topics-create")["spec"]["template"]["spec"]
    assert topics["containers"][0]["command"] == ["cjflow", "topics", "create"]


def test_disruption_budgets_and_network_policies(example):
    for flow in FLOWS:
        pdb = one(example, "PodDisruptionBudget", f"cjflow-{flow}")
        labels = one(example, "StatefulSet", f"cjflow-{flow}")["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
        assert pdb["spec"]["maxUnavailable"] == 1
    policies = {p["metadata"]["name"]: p for p in by_kind(example, "NetworkPolicy")}
    deny = policies["cjflow-default-deny"]["spec"]
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    # every cjflow pod falls under the default deny
    for workload, spec in pod_specs(example):
        labels = (workload["spec"]["template"]["metadata"]["labels"])
        assert all(labels.get(k) == v for k, v in deny["podSelector"]["matchLabels"].items()), workload["metadata"]
    for flow in FLOWS:
        assert f"cjflow-{flow}-cluster" in policies
    assert "cjflow-allow-metrics-scrape" in policies
