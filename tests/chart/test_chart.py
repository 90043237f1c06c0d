"""The Helm chart, without a cluster: lint, render every CI value file at two Kubernetes
versions, validate each manifest strictly, run the helm-unittest suites, and check the rules a
platform team reviews for (hardened pods, a NetworkPolicy per service, the refusals)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.helm import (
    CHART,
    KUBE_VERSIONS,
    RELEASE,
    VALUE_FILES,
    by_kind,
    helm,
    named,
    pod_specs,
    record,
    refusal,
    render,
    tool,
    validate,
)

MINIMAL = CHART / "ci" / "minimal-values.yaml"
POSTGRES = CHART / "ci" / "postgresql-keda-strimzi-values.yaml"
ids = [path.name.removesuffix("-values.yaml") for path in VALUE_FILES]


def test_ci_covers_the_installs_the_readme_names() -> None:
    assert ids == ["all-options", "minimal", "postgresql-keda-strimzi", "sqlite-registry"]


@pytest.mark.parametrize("values", VALUE_FILES, ids=ids)
def test_lint_strict(values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert "0 chart(s) failed" in result.stdout


def test_every_value_file_validates_at_every_kubernetes_version() -> None:
    validated = 0
    for values in VALUE_FILES:
        for kube_version in KUBE_VERSIONS:
            manifests = render([values], kube_version=kube_version)
            assert manifests, values
            for manifest in manifests:
                kind, name = manifest["kind"], manifest["metadata"]["name"]
                where = f"{values.name} @ {kube_version}: {kind} {name}"
                try:
                    validate(manifest, kube_version)
                except Exception as exc:  # the validators' errors name the field
                    pytest.fail(f"{where}: {exc}")
                validated += 1
    record({"helm_value_files_validated": len(VALUE_FILES), "helm_manifests_validated": validated})


def test_strict_validation_catches_an_unknown_field() -> None:
    """The validators are strict: a misspelt field of a core kind or a custom resource fails."""
    manifests = render([POSTGRES])
    deployment = by_kind(manifests, "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    scaled = by_kind(manifests, "ScaledObject")[0]
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 50000
    for broken in (deployment, scaled):
        with pytest.raises(Exception, match=r"readinessProbes|50000"):
            validate(broken, KUBE_VERSIONS[-1])


def test_helm_unittest_suites_pass() -> None:
    result = subprocess.run(
        [tool("helm-unittest"), "--color=false", str(CHART)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    suites = sorted((CHART / "tests").glob("*_test.yaml"))
    tests = [test for suite in suites for test in yaml.safe_load(suite.read_text())["tests"]]
    assert re.search(rf"Tests:\s+{len(tests)} passed, {len(tests)} total", result.stdout)
    record({"helm_unittest_assertions": sum(len(test["asserts"]) for test in tests)})


@pytest.mark.parametrize("values", VALUE_FILES, ids=ids)
def test_every_pod_is_hardened_and_bounded(values: Path) -> None:
    for workload, pod in pod_specs(render([values])):
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
            mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{name}: a read-only root needs a writable /tmp"


@pytest.mark.parametrize("values", VALUE_FILES, ids=ids)
def test_every_service_has_a_network_policy(values: Path) -> None:
    manifests = render([values])
    policies = by_kind(manifests, "NetworkPolicy")
    for workload, _pod in pod_specs(manifests):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selecting = [
            p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(selecting) == 1, workload["metadata"]["name"]
        assert selecting[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]


@pytest.mark.parametrize("values", VALUE_FILES, ids=ids)
def test_every_object_is_labelled(values: Path) -> None:
    for manifest in render([values]):
        labels = manifest["metadata"]["labels"]
        for key in ("name", "instance", "component", "version", "managed-by", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels, (manifest["kind"], key)


def test_a_changed_setting_rolls_every_pod() -> None:
    before = {w["metadata"]["name"]: w for w, _ in pod_specs(render([MINIMAL]))}
    after = pod_specs(render([MINIMAL], ["pipeline.logLevel=DEBUG"]))
    for workload, _pod in after:
        old = before[workload["metadata"]["name"]]["spec"]["template"]["metadata"]["annotations"]
        new = workload["spec"]["template"]["metadata"]["annotations"]
        assert new["checksum/settings"] != old["checksum/settings"]
        assert new["checksum/secrets"] == old["checksum/secrets"]


def test_one_trainer_replica_per_model_and_no_autoscaler_on_it() -> None:
    manifests = render([CHART / "ci" / "sqlite-registry-values.yaml"])
    trainers = [m for m in by_kind(manifests, "StatefulSet") if "trainer" in m["metadata"]["name"]]
    assert [t["spec"]["replicas"] for t in trainers] == [1, 1]
    targets = {
        m["spec"]["scaleTargetRef"]["name"]
        for m in by_kind(manifests, "HorizontalPodAutoscaler", "ScaledObject")
    }
    assert not targets & {t["metadata"]["name"] for t in trainers}


def test_only_the_trainers_read_the_signing_key() -> None:
    for values in VALUE_FILES:
        manifests = render([values])
        signing = next(
            value["valueFrom"]["secretKeyRef"]["name"]
            for _w, pod in pod_specs(manifests)
            for value in pod["containers"][0]["env"]
            if value["name"] == "MILLRACE_SIGNING_KEY"
        )
        for workload, pod in pod_specs(manifests):
            text = yaml.safe_dump(pod)
            is_trainer = (
                workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                == "trainer"
            )
            assert (signing in text) == is_trainer, (values.name, workload["metadata"]["name"])


def test_no_secret_is_rendered_when_existing_ones_are_named() -> None:
    secrets = by_kind(render([CHART / "ci" / "sqlite-registry-values.yaml"]), "Secret")
    assert secrets == []


def test_the_registry_on_postgresql_is_migrated_by_a_hook_before_its_replicas() -> None:
    manifests = render([POSTGRES])
    registry = named(manifests, "Deployment", f"{RELEASE}-millrace-registry")
    assert registry["spec"]["replicas"] == 3
    job = by_kind(manifests, "Job")[0]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert by_kind(manifests, "PersistentVolumeClaim") == []


def test_the_image_is_the_one_make_images_builds() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = (CHART.parents[2] / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', project, re.M)
    assert version is not None and chart["appVersion"] == version.group(1)
    images = {c["image"] for _w, pod in pod_specs(render([MINIMAL])) for c in pod["containers"]}
    assert images == {f"millrace:{chart['appVersion']}"}
    script = (CHART.parents[1] / "docker" / "images.sh").read_text()
    assert 'docker tag millrace:local "millrace:$VERSION"' in script


@pytest.mark.parametrize(
    ("sets", "reason"),
    [
        (["registry.replicaCount=2"], "/registry/replicaCount': value must be 1"),
        (["featurizer.replicas=2"], "additional properties 'replicas' not allowed"),
        (["featurizer.extraEnv[0].value=x"], "missing property 'name'"),
        (["featurizer.settings.batch_size=1"], "invalid propertyName 'batch_size'"),
        (["pipeline.settings.feature_module=x"], "invalid propertyName 'feature_module'"),
        (["kafka.bootstrapServers="], "kafka.bootstrapServers is required"),
        (["redis.url="], "redis.url (or redis.existingSecret"),
        (["kafka.topics.minInsyncReplicas=4"], "no write could ever be acknowledged"),
        (["kafka.strimzi.enabled=true"], "kafka.strimzi.clusterName is required"),
        (["trainer.signingKey.value="], "trainer.signingKey.value is required"),
        (["featurizer.keda.enabled=true", "featurizer.keda.maxReplicaCount=9"], "> kafka.topics"),
    ],
)
def test_refusals_name_what_to_change(sets: list[str], reason: str) -> None:
    assert reason in refusal(sets, [MINIMAL])
