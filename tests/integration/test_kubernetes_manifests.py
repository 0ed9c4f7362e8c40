"""The Kubernetes manifests (deploy/kubernetes/): every documented overlay rendered by the real
`kubectl kustomize`, every object validated against the Kubernetes OpenAPI schemas
(kubernetes-validate, offline) and the Prometheus Operator objects against the CRDs' own
OpenAPI schemas (tests/data/prometheus-operator-crds/, copied from prometheus-operator
v0.93.0), the generated PrometheusRule, dashboard ConfigMap and AlertmanagerConfig compared
with a fresh generation, and the PrometheusRule's groups run through promtool's unit tests.

No cluster is contacted: a cluster could still refuse what a schema allows (admission
policies, quotas, a missing StorageClass); docs/deploy.md says what was verified here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from controller.launch_argo import argo_parameters
from controller.launch_kubernetes import JobOverrides, build_job, job_of
from controller.launch_names import job_name
from controller.launcher import LaunchRequest
from controller.settings import ControllerSettings
from monitoring import alerting, kube
from tests.conftest import require_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("default", "minimal", "production", "kubernetes-jobs")
KUBERNETES_VERSION = "1.35.0"   # a current release; kubernetes-validate ships its schemas
CRD_DIR = ROOT / "tests" / "data" / "prometheus-operator-crds"
CRD_KINDS = {"PrometheusRule", "ServiceMonitor", "AlertmanagerConfig"}
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|ACCESS_KEY|DATABASE_URL|BACKEND_STORE_URI")
PROMTOOL_PACKAGE = "prometheus prometheus-alertmanager"


def render(overlay: str | Path) -> list[dict[str, Any]]:
    kubectl = require_binary("kubectl", "kubectl")
    path = overlay if isinstance(overlay, Path) else KUBE / "overlays" / overlay
    done = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(name) for name in OVERLAYS}


def objects(rendered: dict[str, list[dict[str, Any]]], kind: str | None = None
            ) -> Iterator[tuple[str, dict[str, Any]]]:
    for overlay, docs in rendered.items():
        for doc in docs:
            if kind is None or doc["kind"] == kind:
                yield overlay, doc


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] == "Deployment":
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


# ------------------------------------------------------------------ rendering and schemas


def test_every_overlay_renders_the_whole_loop(rendered: dict[str, list[dict[str, Any]]]) -> None:
    counts = {name: len(docs) for name, docs in rendered.items()}
    assert counts == {"default": 23, "minimal": 15, "production": 21, "kubernetes-jobs": 26}
    for docs in rendered.values():
        for kind, name in (("Deployment", "driftloop-serving"), ("Service", "driftloop-serving"),
                           ("PodDisruptionBudget", "driftloop-serving"),
                           ("Deployment", "driftloop-controller"),
                           ("Service", "driftloop-controller"),
                           ("CronJob", "driftloop-drift-check"),
                           ("CronJob", "driftloop-log-compact"),
                           ("CronJob", "driftloop-log-expire"),
                           ("ServiceAccount", "driftloop-controller")):
            one(docs, kind, name)
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == kube.NAMESPACE, doc["metadata"]["name"]
                assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "driftloop"
    kinds = {name: {d["kind"] for d in docs} for name, docs in rendered.items()}
    assert kinds["default"] >= CRD_KINDS and kinds["production"] >= CRD_KINDS
    assert not CRD_KINDS & kinds["minimal"]   # a cluster without the Prometheus Operator
    assert "HorizontalPodAutoscaler" in kinds["production"]
    assert {"Role", "RoleBinding"} <= kinds["kubernetes-jobs"]
    assert not {"Role", "RoleBinding"} & (kinds["default"] | kinds["minimal"] | kinds["production"])


def test_every_core_object_validates_against_the_kubernetes_schemas(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    checked = 0
    for overlay, doc in objects(rendered):
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} "
                        f"at {list(exc.path)}")
        checked += 1
    assert checked == 15 + 19 + 17 + 22


def test_the_kubernetes_schemas_catch_a_misspelt_field(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = json.loads(json.dumps(one(rendered["minimal"], "Deployment",
                                           "driftloop-serving")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it with field validation Strict (kubectl's
    default): an object with declared properties takes no others."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, tuple[str, jsonschema.Draft7Validator]]:
    validators = {}
    for path in sorted(CRD_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        validators[data["kind"]] = (f"{data['group']}/{data['version']}",
                                    jsonschema.Draft7Validator(_strict(data["schema"])))
    assert set(validators) == CRD_KINDS
    return validators


def test_prometheus_operator_objects_validate_against_the_crd_schemas(
        rendered: dict[str, list[dict[str, Any]]],
        crd_validators: dict[str, tuple[str, jsonschema.Draft7Validator]]) -> None:
    checked = 0
    for overlay, doc in objects(rendered):
        if doc["kind"] not in CRD_KINDS:
            continue
        api_version, validator = crd_validators[doc["kind"]]
        assert doc["apiVersion"] == api_version
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
        assert not errors, f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {errors}"
        checked += 1
    assert checked == 3 * 4   # two ServiceMonitors, a PrometheusRule, an AlertmanagerConfig
    monitor = json.loads(json.dumps(one(rendered["default"], "ServiceMonitor",
                                        "driftloop-serving")))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert list(crd_validators["ServiceMonitor"][1].iter_errors(monitor))


# ------------------------------------------------------------------ one source for rules


def test_generated_objects_match_a_fresh_generation() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "kube_manifests.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    for relative, text in kube.manifests().items():
        assert (KUBE / relative).read_text() == text, relative


def test_prometheus_rule_holds_exactly_the_rules_promtool_tests(
        rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    shipped = [group for path in sorted(alerting.RULES_DIR.glob("*.yml"))
               for group in yaml.safe_load(path.read_text())["groups"]]
    for overlay in ("default", "production"):
        rule = one(rendered[overlay], "PrometheusRule", "driftloop")
        assert rule["spec"]["groups"] == shipped, overlay
    # The rendered groups themselves pass promtool's check and every unit test.
    promtool = require_binary("promtool", PROMTOOL_PACKAGE)
    extracted = tmp_path / "rules.yml"
    extracted.write_text(yaml.safe_dump({"groups": one(rendered["default"], "PrometheusRule",
                                                       "driftloop")["spec"]["groups"]}))
    check = subprocess.run([promtool, "check", "rules", str(extracted)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted((alerting.PROMETHEUS_DIR / "tests").glob("*.yml"))
    for path in tests:
        case = yaml.safe_load(path.read_text())
        case["rule_files"] = [str(extracted)]
        (tmp_path / path.name).write_text(yaml.safe_dump(case, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", *(str(tmp_path / p.name) for p in tests)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(tests)


def test_plain_prometheus_scrape_jobs_match_prometheus_yml(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    shipped = {j["job_name"]: j for j in
               yaml.safe_load((alerting.PROMETHEUS_DIR / "prometheus.yml").read_text())
               ["scrape_configs"]}
    jobs = kube.scrape_configs()
    for job in jobs:
        assert job.get("honor_labels") == shipped[job["job_name"]].get("honor_labels")
        keep = job["relabel_configs"][0]["regex"].split(";")
        service = one(rendered["minimal"], "Service", keep[0])
        assert keep[1] in {p["name"] for p in service["spec"]["ports"]}
        assert service["metadata"]["labels"]["driftloop.io/job"] == job["job_name"]
    serving = one(rendered["minimal"], "Service", "driftloop-serving")
    assert serving["metadata"]["labels"]["driftloop.io/model"] == \
        shipped[alerting.SERVING_JOB]["static_configs"][0]["labels"]["model"]
    # Not run through promtool: Debian's Prometheus is built without Kubernetes service
    # discovery ("field kubernetes_sd_configs not found"), so only the shape is checked here.
    for job in jobs:
        assert job["kubernetes_sd_configs"] == [{"role": "endpoints",
                                                 "namespaces": {"names": [kube.NAMESPACE]}}]


def test_dashboard_configmap_carries_every_dashboard_for_the_cluster_datasource(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    configmap = one(rendered["default"], "ConfigMap", "driftloop-dashboards")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((alerting.GRAFANA_DIR / "dashboards").glob("*.json"))
    assert sorted(configmap["data"]) == [p.name for p in files]
    for path in files:
        text = configmap["data"][path.name]
        assert kube.SHIPPED_DATASOURCE_UID not in text
        # the same dashboard but for the datasource uid
        assert json.loads(text) == json.loads(path.read_text().replace(
            f'"{kube.SHIPPED_DATASOURCE_UID}"', f'"{kube.CLUSTER_DATASOURCE_UID}"'))


def test_alertmanager_config_routes_driftloop_alerts_to_the_controller_service(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    spec = one(docs, "AlertmanagerConfig", "driftloop")["spec"]
    shipped = yaml.safe_load(alerting.ALERTMANAGER_FILE.read_text())["route"]["routes"][0]
    assert spec["route"]["matchers"] == [{"name": "driftloop_action",
                                          "value": "retrain|rollback|none", "matchType": "=~"}]
    assert spec["route"]["groupBy"] == shipped["group_by"]
    hook = spec["receivers"][0]["webhookConfigs"][0]
    service = one(docs, "Service", "driftloop-controller")
    port = service["spec"]["ports"][0]["port"]
    assert hook["url"] == (f"http://{service['metadata']['name']}."
                           f"{service['metadata']['namespace']}.svc:{port}{alerting.WEBHOOK_PATH}")
    credentials = hook["httpConfig"]["authorization"]["credentials"]
    controller = one(docs, "Deployment", "driftloop-controller")
    token = next(e for e in controller["spec"]["template"]["spec"]["containers"][0]["env"]
                 if e["name"] == "DRIFTLOOP_CONTROLLER_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == credentials   # the token the controller checks


# ------------------------------------------------------------------ what the objects say


def test_serving_probes_resources_and_disruption_budget(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        serving = one(docs, "Deployment", "driftloop-serving")
        container = serving["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:1] == ["serve"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        budget = one(docs, "PodDisruptionBudget", "driftloop-serving")
        assert budget["spec"]["selector"]["matchLabels"].items() <= \
            serving["spec"]["template"]["metadata"]["labels"].items()
        controller = one(docs, "Deployment", "driftloop-controller")
        assert controller["spec"]["template"]["spec"]["containers"][0]["args"] == ["controller"]
        if overlay == "production":
            assert "replicas" not in serving["spec"]   # the autoscaler owns it
            hpa = one(docs, "HorizontalPodAutoscaler", "driftloop-serving")
            assert hpa["spec"]["scaleTargetRef"]["name"] == "driftloop-serving"
            assert controller["spec"]["replicas"] == 2
            env = {e["name"] for e in controller["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert "DRIFTLOOP_CONTROLLER_DATABASE_URL" in env   # replicas need PostgreSQL


def test_controller_replicas_only_on_postgresql(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        controller = one(docs, "Deployment", "driftloop-controller")
        env = {e["name"] for e in controller["spec"]["template"]["spec"]["containers"][0]["env"]}
        on_postgres = "DRIFTLOOP_CONTROLLER_DATABASE_URL" in env
        if not on_postgres:   # SQLite on a ReadWriteOnce claim: one pod, never two at once
            assert controller["spec"]["replicas"] == 1, overlay
            assert controller["spec"]["strategy"]["type"] == "Recreate", overlay
        if controller["spec"]["replicas"] > 1:
            assert on_postgres, overlay
        launcher = next(e["value"] for e in controller["spec"]["template"]["spec"]
                        ["containers"][0]["env"] if e["name"] == "DRIFTLOOP_CONTROLLER_LAUNCHER")
        # replicas come and go: a retrain must not run inside one of them
        wanted = {"production": "github", "kubernetes-jobs": "kubernetes"}.get(overlay, "local")
        assert launcher == wanted, overlay


def test_services_and_monitors_select_real_pods_and_ports(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        pods = [d["spec"]["template"] for d in docs if d["kind"] == "Deployment"]
        services = [d for d in docs if d["kind"] == "Service"]
        for service in services:
            selected = [p for p in pods
                        if service["spec"]["selector"].items() <= p["metadata"]["labels"].items()]
            assert len(selected) == 1, f"{overlay}: {service['metadata']['name']}"
            ports = {p["name"] for c in selected[0]["spec"]["containers"] for p in c["ports"]}
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
        jobs = {alerting.SERVING_JOB, alerting.CONTROLLER_JOB}
        for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
            matches = [s for s in services if monitor["spec"]["selector"]["matchLabels"].items()
                       <= s["metadata"]["labels"].items()]
            assert len(matches) == 1, monitor["metadata"]["name"]
            # job="driftloop-serving" as in prometheus.yml, so the rules select the same series
            job = matches[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]]
            assert job in jobs
            jobs.discard(job)
            assert {e["port"] for e in monitor["spec"]["endpoints"]} <= \
                {p["name"] for p in matches[0]["spec"]["ports"]}
        if overlay != "minimal":
            assert not jobs, f"{overlay}: no ServiceMonitor for {jobs}"


# The driftloop CLI's command tree, from a fresh process (assembling it registers commands).
CLI_TREE = """
import json, click, typer.main
from driftloop import cli
cli._assemble()
def tree(c):
    return {n: tree(s) for n, s in c.commands.items()} if isinstance(c, click.Group) else {}
print(json.dumps(tree(typer.main.get_command(cli.app))))
"""


def test_cronjobs_never_overlap_and_run_real_commands(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    done = subprocess.run([sys.executable, "-c", CLI_TREE], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    for _, job in objects(rendered, "CronJob"):
        spec = job["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        if spec.get("suspend"):   # the training Jobs' template: never scheduled, args set by
            continue              # the launcher (test_the_training_cronjob_makes_jobs_...)
        assert spec["startingDeadlineSeconds"] > 0 and spec["timeZone"] == "Etc/UTC"
        assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        container = pod["containers"][0]
        if "command" in container:   # /bin/sh -c "driftloop ..."
            words = container["args"][0].split()
            assert words[0] == "driftloop"
            words = words[1:]
        else:
            words = container["args"]
        node = cli
        for word in (w for w in words if not w.startswith(("-", '"'))):
            if not node:
                break
            assert word in node, f"{job['metadata']['name']}: no `driftloop ... {word}`"
            node = node[word]
    drift = one(rendered["default"], "CronJob", "driftloop-drift-check")
    script = drift["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    # exit 1 (drift found, verdict posted) is a successful check; 2 (an error) fails the pod
    for code, ok in ((0, True), (1, True), (2, False)):
        stand_in = f"driftloop() {{ return {code}; }}; "   # the real command, exiting so
        shell = subprocess.run(["/bin/sh", "-c", stand_in + script], capture_output=True,
                               timeout=10)
        assert (shell.returncode == 0) is ok, code


def test_pods_run_the_dockerfile_image_as_its_user(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    uid = int(re.search(r"--uid (\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    assert 'ENTRYPOINT ["driftloop"]' in dockerfile
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(),
                        re.M).group(1)  # type: ignore[union-attr]
    for _, docs in rendered.items():
        for name, pod in pod_specs(docs):
            assert pod["securityContext"]["runAsUser"] == uid, name
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
            for container in pod["containers"]:
                assert container["image"] == f"driftloop:{version}", name
                assert container.get("command", [None])[0] in {None, "/bin/sh", "mlflow"}
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"]["drop"] == ["ALL"]


def test_an_operator_overlay_sets_the_image_everywhere(tmp_path: Path) -> None:
    """docs/deploy.md's step 1: an overlay of one's own with an `images:` entry."""
    mine = tmp_path / "mine"
    mine.mkdir()
    base = os.path.relpath(KUBE / "overlays" / "default", mine)
    mine.joinpath("kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [base],
        "images": [{"name": "driftloop", "newName": "registry.example.com/driftloop",
                    "newTag": "0.1.0"}]}))
    images = [c["image"] for _, pod in pod_specs(render(mine)) for c in pod["containers"]]
    assert images == ["registry.example.com/driftloop:0.1.0"] * 6


def _known_settings() -> set[str]:
    from controller.settings import ControllerSettings
    from kernel.settings import CommonSettings
    from monitoring.settings import MonitoringSettings
    from serving.settings import ServingSettings

    known: set[str] = set()
    for cls in (CommonSettings, ServingSettings, ControllerSettings, MonitoringSettings):
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            choices = getattr(field.validation_alias, "choices", None)
            known |= set(choices) if choices else {f"{prefix}{name}".upper()}
    return known


def test_secrets_come_from_secrets_and_every_setting_is_real(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    known = _known_settings()
    docs_text = (ROOT / "docs" / "deploy.md").read_text()
    for overlay, docs in rendered.items():
        assert not [d for d in docs if d["kind"] == "Secret"], overlay   # the operator's
        for configmap in (d for d in docs if d["kind"] == "ConfigMap"):
            for key in configmap.get("data", {}):
                assert not SECRET_NAME.search(key), f"{configmap['metadata']['name']}: {key}"
                if key.startswith("DRIFTLOOP_"):
                    assert key in known, key
        referenced = set()
        for name, pod in pod_specs(docs):
            for container in pod["containers"]:
                for source in container.get("envFrom", []):
                    if "secretRef" in source:
                        referenced.add(source["secretRef"]["name"])
                for env in container.get("env", []):
                    if env["name"].startswith("DRIFTLOOP_"):
                        assert env["name"] in known, f"{name}: {env['name']}"
                    if SECRET_NAME.search(env["name"]):
                        assert "value" not in env, f"{name}: {env['name']} in plain text"
                        ref = env["valueFrom"]["secretKeyRef"]
                        referenced.add(ref["name"])
                        assert ref["key"] == env["name"], name
        for secret in referenced:   # every Secret the operator must create is documented
            assert f"`{secret}`" in docs_text, secret


def test_controller_role_is_limited_to_jobs_in_its_namespace(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The kubernetes launcher's Role grants what controller/launch_kubernetes.py asks (see
    tests/integration/test_launcher_kubernetes.py for its requests) and nothing more."""
    for overlay, docs in rendered.items():
        assert not {"ClusterRole", "ClusterRoleBinding"} & {d["kind"] for d in docs}, overlay
    docs = rendered["kubernetes-jobs"]
    role = one(docs, "Role", "driftloop-controller-jobs")
    allowed = {("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
               ("batch", "cronjobs"): {"get"}, ("", "pods"): {"get", "list"}}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert set(rule["verbs"]) <= allowed[(group, resource)], (group, resource)
                if resource == "cronjobs":   # only the template's
                    assert rule["resourceNames"] == ["driftloop-train"]
    binding = one(docs, "RoleBinding", "driftloop-controller-jobs")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "driftloop-controller",
                                    "namespace": kube.NAMESPACE}]
    controller = one(docs, "Deployment", "driftloop-controller")["spec"]["template"]["spec"]
    assert controller["serviceAccountName"] == "driftloop-controller"
    assert controller["automountServiceAccountToken"] is True
    for overlay in ("default", "minimal", "production"):   # no API token where none is needed
        for name, pod in pod_specs(rendered[overlay]):
            assert pod["automountServiceAccountToken"] is False, (overlay, name)


def test_the_training_cronjob_makes_jobs_that_validate_and_never_runs_itself(
        rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """The Job the launcher builds from the rendered template CronJob (with recent rows, so
    with the init container) validates against the schemas, and refers to ConfigMaps,
    Secrets and the claim that exist or are documented."""
    docs = rendered["kubernetes-jobs"]
    cronjob = one(docs, "CronJob", "driftloop-train")
    assert cronjob["spec"]["suspend"] is True
    controller = one(docs, "Deployment", "driftloop-controller")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in controller["containers"][0]["env"]}
    assert env["DRIFTLOOP_CONTROLLER_KUBERNETES_JOB_TEMPLATE"] == "cronjob/driftloop-train"
    recent = tmp_path / "cycle.parquet"
    request = LaunchRequest("churn", "churn-cycle-20261202T080000-3", 1,
                            Path(env["DRIFTLOOP_CONTROLLER_SPECS"]),
                            (Path("/var/lib/driftloop/data/churn.csv"), recent), reason="drift",
                            recent_path=recent)
    job = build_job(job_of(cronjob, "rendered"), JobOverrides(), request,
                    job_name(request.cycle_id, 1), "s3://driftloop-training/churn/x.parquet")
    job["metadata"]["namespace"] = kube.NAMESPACE
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-rows"]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in names
        if "persistentVolumeClaim" in volume:
            assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
    docs_text = (ROOT / "docs" / "deploy.md").read_text()
    for source in pod["containers"][0]["envFrom"]:
        if "secretRef" in source:
            assert f"`{source['secretRef']['name']}`" in docs_text
        else:
            assert ("ConfigMap", source["configMapRef"]["name"]) in names


def test_the_argo_workflow_template_takes_what_the_argo_launcher_sends() -> None:
    """deploy/kubernetes/examples/argo-workflowtemplate.yaml (not in an overlay: it needs
    Argo's CRDs, whose schema is not checked here): its parameters are the submit's, its
    container validates as a core/v1 Container and runs `driftloop train` tagged by cycle."""
    template = yaml.safe_load((KUBE / "examples" / "argo-workflowtemplate.yaml").read_text())
    assert template["kind"] == "WorkflowTemplate"
    assert template["metadata"]["name"] == ControllerSettings().controller_argo_template
    declared = [p["name"] for p in template["spec"]["arguments"]["parameters"]]
    assert declared == list(argo_parameters(LaunchRequest(
        "churn", "c-1", 1, Path("spec.yaml"), (), reason="drift"), None))
    (step,) = template["spec"]["templates"]
    container = step["container"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "check", "namespace": kube.NAMESPACE},
           "spec": {"containers": [container], "volumes": template["spec"]["volumes"],
                    "securityContext": template["spec"]["securityContext"]}}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    script = container["args"][0]
    assert "exec driftloop train" in script and '--tag "cycle_id=$CYCLE_ID"' in script
    assert "{{" not in script   # parameters reach the script through env only
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CYCLE_ID"] == "{{workflow.parameters.cycle_id}}"


def test_the_controller_spec_is_the_compose_spec() -> None:
    assert (KUBE / "base" / "specs" / "churn.yaml").read_text() == \
        (ROOT / "deploy" / "specs" / "churn.yaml").read_text()
