"""deploy/kubernetes/, checked offline: the core kinds against Kubernetes' own schemas
(PyPI ``kubernetes-validate``, strict, so unknown fields fail), the KServe custom
resource by its fields, and the wiring between the files (names, ports, probes, images,
the model's path) that no schema can see."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"
#: The oldest Kubernetes release still in common support, and the newest schemas known.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CORE_KINDS = {
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PersistentVolumeClaim",
    "Job",
    "PodDisruptionBudget",
}
MODEL = "bone-fracture"


def documents() -> list[tuple[str, dict[str, Any]]]:
    """Every YAML document under deploy/kubernetes/, with the file it came from."""
    found = []
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((str(path.relative_to(MANIFESTS)), doc))
    return found


def one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(pod: dict[str, Any], name: str, *, init: bool = False) -> dict[str, Any]:
    (found,) = [c for c in pod["initContainers" if init else "containers"] if c["name"] == name]
    return found


def env(spec: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in spec["env"]}


def test_every_manifest_is_a_known_kind() -> None:
    kinds = {doc["kind"] for _, doc in documents()}
    assert kinds == CORE_KINDS | {"InferenceService"}


@pytest.mark.parametrize("version", VERSIONS)
def test_core_kinds_pass_kubernetes_schemas(version: str) -> None:
    errors, checked = [], []
    for path, doc in documents():
        if doc["kind"] not in CORE_KINDS:
            continue
        where = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {exc.message}")
        checked.append(where)
    assert not errors
    assert len(checked) >= len(CORE_KINDS) + 2  # two Deployments, two Services


def test_the_schema_check_can_fail() -> None:
    deployment = one("Deployment", "bonefrac-service")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    probe = broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGett"] = probe.pop("httpGet")  # a typo a human would make
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_service_deployment_probes_ports_and_user() -> None:
    deployment = one("Deployment", "bonefrac-service")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    service = container(pod, "service")
    assert service["image"] == "bonefrac-service:latest"  # docker-compose.yml's name
    (port,) = service["ports"]
    assert port["containerPort"] == 8000
    assert service["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert service["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert "cpu" in service["resources"]["requests"]  # the autoscaler's yardstick
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the images' user
    variables = env(service)
    assert variables["BONEFRAC_HOST"] == "0.0.0.0"
    assert variables["BONEFRAC_MODEL_NAME"] == MODEL
    assert variables["BONEFRAC_REPLICA_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The pod drains after the preStop pause within its grace period.
    assert pod["terminationGracePeriodSeconds"] > 30


def test_init_container_places_the_model_where_the_service_reads_it() -> None:
    pod = one("Deployment", "bonefrac-service")["spec"]["template"]["spec"]
    init, service = container(pod, "place-model", init=True), container(pod, "service")
    assert init["image"] == "bonefrac-trainer:latest"
    command = init["command"] + init["args"]
    assert command[:4] == ["python", "-m", "trainer", "assemble"]
    models_dir = command[command.index("--models") + 1]
    assert command[command.index("--name") + 1] == MODEL
    assert env(service)["BONEFRAC_MODELS_DIR"] == models_dir
    (written,) = [m for m in init["volumeMounts"] if m["mountPath"] == models_dir]
    (read,) = [m for m in service["volumeMounts"] if m["mountPath"] == models_dir]
    assert written["name"] == read["name"]
    assert read["readOnly"] is True
    assert not written.get("readOnly", False)
    assert any(v["name"] == read["name"] for v in pod["volumes"])


def test_service_and_autoscaler_target_the_deployment() -> None:
    deployment = one("Deployment", "bonefrac-service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one("Service", "bonefrac-service")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    hpa = one("HorizontalPodAutoscaler", "bonefrac-service")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "bonefrac-service")
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = one("PodDisruptionBudget", "bonefrac-service")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_page_reaches_the_service_by_its_service_name() -> None:
    page = one("Deployment", "bonefrac-ui")["spec"]["template"]["spec"]
    ui = container(page, "ui")
    assert ui["image"] == "bonefrac-ui:latest"
    api = urlsplit(env(ui)["BONEFRAC_API_URL"])
    service = one("Service", "bonefrac-service")
    assert api.hostname == service["metadata"]["name"]
    assert api.port == service["spec"]["ports"][0]["port"]
    assert ui["readinessProbe"]["httpGet"]["path"] == "/_stcore/health"
    assert "volumes" not in page  # the page needs no model
    page_service = one("Service", "bonefrac-ui")
    assert page_service["spec"]["ports"][0]["port"] == 8501


def test_kserve_serves_the_same_savedmodel_on_tf_serving() -> None:
    (isvc,) = [doc for _, doc in documents() if doc["kind"] == "InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"]["name"] == MODEL  # /v1/models/bone-fracture:predict, as ours
    predictor = isvc["spec"]["predictor"]
    assert set(predictor) <= {"minReplicas", "maxReplicas", "model", "scaleMetric"}
    model = predictor["model"]
    assert set(model) <= {"modelFormat", "runtime", "storageUri", "resources"}
    assert model["modelFormat"]["name"] == "tensorflow"
    assert model["runtime"] == "kserve-tensorflow-serving"
    uri = urlsplit(model["storageUri"])
    # pvc://<claim>/<model folder>: the claim the Job fills with models/<name>/<N>/
    assert uri.scheme == "pvc"
    claim = one("PersistentVolumeClaim", uri.netloc)
    assert uri.path.strip("/") == MODEL
    job = one("Job", "bonefrac-assemble")["spec"]["template"]["spec"]
    (volume,) = job["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    script = " ".join(container(job, "assemble")["args"])
    assert "--models /models" in script
    assert f"--name {MODEL}" in script
    assert container(job, "assemble")["volumeMounts"][0]["mountPath"] == "/models"
