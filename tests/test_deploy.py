"""Deployment artefacts: k8s manifests, compose file and Dockerfile, checked offline.

`kubectl kustomize k8s` renders the manifests (no cluster needed); they are checked for the
properties the design asks for and validated against the bundled Kubernetes schemas of
`kubernetes-validate` (strict: unknown fields fail). `docker-compose config -q` checks the compose
file against the Compose specification. Neither a Docker daemon nor a cluster is used.
"""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from worldenv.config import MODEL_SERVICES, SERVICES

ROOT = pathlib.Path(__file__).resolve().parents[1]
K8S_DIR = ROOT / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

GRPC_SERVICES = {name: service.port for name, service in SERVICES.items() if service.proto}
IMAGE = "worldenv:0.1.0"
# kubectl's client minor (1.32) and the newest schemas kubernetes-validate bundles.
K8S_VERSIONS = ["1.32.0", "latest"]
GPU_SERVICES = {f"{name}-gpu": name for name in MODEL_SERVICES}  # profile "gpu": CUDA variants
# trainer: opt-in profile "train"; the GPU model services and their worker: profile "gpu"
COMPOSE_SERVICES = {"redis", *SERVICES, "worker", "trainer", *GPU_SERVICES, "worker-gpu"}
METRICS_PODS = {*SERVICES, "worker"}  # everything long-running of worldenv serves /metrics
# Who must wait for whom to be healthy before starting.
COMPOSE_NEEDS = {
    "debug-api": {"redis"},
    "worker": {"redis", *MODEL_SERVICES},
    "worker-gpu": {"redis", *GPU_SERVICES},
    "policy": {"redis"},        # its replicas load the trainer's weights from Redis
    "policy-gpu": {"redis"},
}


# ---- Kubernetes ---------------------------------------------------------------------------------

def render(directory: pathlib.Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(f"kubectl not on PATH: cannot render {directory.name}/ with `kubectl kustomize`")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render(K8S_DIR)


@pytest.fixture(scope="module")
def rendered_gpu() -> list[dict]:
    return render(K8S_DIR / "gpu")


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict]) -> dict[str, dict]:
    """Every object with a pod template (Deployments and the Redis StatefulSet)."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def containers(workload: dict) -> list[dict]:
    return workload["spec"]["template"]["spec"]["containers"]


def test_one_deployment_per_deployable(rendered):
    assert set(by_kind(rendered, "Deployment")) == {*GRPC_SERVICES, "debug-api", "worker"}
    assert "redis" in by_kind(rendered, "StatefulSet")


def test_every_container_has_probes_and_resources(rendered):
    for name, workload in workloads(rendered).items():
        for c in containers(workload):
            where = f"{name}/{c['name']}"
            assert "readinessProbe" in c and "livenessProbe" in c, f"{where}: probes missing"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), \
                    f"{where}: resources.{kind} needs cpu and memory"


def test_every_pod_runs_as_non_root(rendered):
    for name, workload in workloads(rendered).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        for c in containers(workload):
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name


def test_read_only_pods_get_a_writable_tmp(rendered):
    for name, workload in workloads(rendered).items():
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
        for c in containers(workload):
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: no /tmp mount"
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp is not an emptyDir"


def test_grpc_services_probe_the_grpc_health_service(rendered):
    deployments = by_kind(rendered, "Deployment")
    for name, port in GRPC_SERVICES.items():
        (c,) = containers(deployments[name])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == port, f"{name}.{probe}"


def test_debug_api_is_ready_on_healthz(rendered):
    (c,) = containers(by_kind(rendered, "Deployment")["debug-api"])
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_grpc_services_are_headless(rendered):
    # The world model must be: clients balance across its pods themselves (dns:///, round robin).
    services = by_kind(rendered, "Service")
    for name, port in GRPC_SERVICES.items():
        assert services[name]["spec"].get("clusterIP") == "None", f"{name} Service is not headless"
        assert [p["port"] for p in services[name]["spec"]["ports"]] == [port]


def test_services_select_their_deployments(rendered):
    deployments = by_kind(rendered, "Deployment") | by_kind(rendered, "StatefulSet")
    for name, svc in by_kind(rendered, "Service").items():
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items(), name


def test_hpas_scale_world_model_and_worker(rendered):
    hpas = by_kind(rendered, "HorizontalPodAutoscaler")
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}
    assert targets == {"world-model", "worker"}
    for h in hpas.values():
        assert h["apiVersion"] == "autoscaling/v2"
        assert h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert h["spec"]["maxReplicas"] > h["spec"].get("minReplicas", 1)


def test_configmap_addresses_balance_over_pods(rendered):
    (config,) = by_kind(rendered, "ConfigMap").values()
    data = config["data"]
    assert data["WORLDENV_WORLD_MODEL_ADDR"].startswith("dns:///")
    for name, port in GRPC_SERVICES.items():
        key = f"WORLDENV_{name.upper().replace('-', '_')}_ADDR"
        assert data[key] == f"dns:///{name}:{port}"
    assert data["REDIS_URL"].startswith("redis://redis:6379")
    assert int(data["WORLDENV_BATCH_SIZE"]) >= 1


def test_config_keys_referenced_exist(rendered):
    (config,) = by_kind(rendered, "ConfigMap").values()
    for name, workload in workloads(rendered).items():
        for c in containers(workload):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["name"] == config["metadata"]["name"], f"{name}: {env['name']}"
                    assert ref["key"] in config["data"], f"{name}: {env['name']}"


def test_auth_token_secret_is_optional(rendered):
    for name, workload in workloads(rendered).items():
        for c in containers(workload):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["optional"] is True, f"{name}: {env['name']} Secret must be optional"


def test_image_is_set_in_one_place(rendered):
    images = {c["image"] for w in workloads(rendered).values() for c in containers(w)}
    assert images == {IMAGE, "redis:7"}
    for path in K8S_DIR.rglob("*.yaml"):
        assert IMAGE not in path.read_text() or path.name == "kustomization.yaml", path.name


def test_redis_keeps_its_data(rendered):
    redis = by_kind(rendered, "StatefulSet")["redis"]
    (c,) = containers(redis)
    assert "--appendonly" in c["args"] and "yes" in c["args"]
    claims = {t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]}
    assert {m["name"] for m in c["volumeMounts"] if m["mountPath"] == "/data"} <= claims


def test_pods_are_annotated_for_prometheus_on_a_declared_port(rendered):
    deployments = by_kind(rendered, "Deployment")
    for name in METRICS_PODS:
        template = deployments[name]["spec"]["template"]
        notes = template["metadata"].get("annotations", {})
        assert notes.get("prometheus.io/scrape") == "true" and notes.get("prometheus.io/path") == "/metrics", name
        (c,) = template["spec"]["containers"]
        port = int(notes["prometheus.io/port"])
        assert port in {p["containerPort"] for p in c.get("ports", [])}, f"{name}: port {port} not declared"
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if name == "debug-api":  # /metrics is a route of the app, on its HTTP port
            assert port == SERVICES["debug-api"].port and "WORLDENV_METRICS_PORT" not in env
        else:
            assert env.get("WORLDENV_METRICS_PORT") == str(port), name


def test_gpu_variant_puts_each_model_service_on_one_gpu(rendered, rendered_gpu):
    cpu, gpu = workloads(rendered), workloads(rendered_gpu)
    assert set(cpu) == set(gpu)
    for name in gpu:
        if name not in MODEL_SERVICES:  # everything else is the CPU deployment, unchanged
            assert gpu[name] == cpu[name], name
            continue
        (c,), (base,) = containers(gpu[name]), containers(cpu[name])
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["WORLDENV_DEVICE"] == "cuda" and env["WORLDENV_DTYPE"] == "bfloat16", name
        assert set(env) == {e["name"] for e in base["env"]} | {"WORLDENV_DTYPE"}, name
        assert c["image"] == IMAGE + "-cuda", name
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 == c["resources"]["requests"]["nvidia.com/gpu"], name
        tolerations = gpu[name]["spec"]["template"]["spec"]["tolerations"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations, name
        assert c["args"] == base["args"] and c["startupProbe"]["grpc"] == base["startupProbe"]["grpc"], name


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_manifests_match_kubernetes_schemas(rendered, rendered_gpu, variant, version):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    version = kv.latest_version() if version == "latest" else version
    for doc in rendered if variant == "cpu" else rendered_gpu:
        try:
            kv.validate(doc, version, strict=True)  # bundled schemas; no network
        except kv.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {where}: {e.message}")


# ---- docker-compose ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_config_is_valid():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not on PATH (scripts/ci-system-deps.sh installs it)")
    out = subprocess.run([exe, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, f"docker-compose config -q failed:\n{out.stderr}"


def test_compose_services_have_healthchecks(compose):
    services = compose["services"]
    assert set(services) == COMPOSE_SERVICES
    for name, svc in services.items():
        test = svc.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"


def test_compose_grpc_healthchecks_use_the_health_command(compose):
    for name, port in GRPC_SERVICES.items():
        svc = compose["services"][name]
        assert svc["healthcheck"]["test"][1:] == ["worldenv", "health", "grpc", f"localhost:{port}"]
        assert f"{port}:{port}" in svc["ports"]


def test_compose_waits_for_healthy_dependencies(compose):
    for name, needs in COMPOSE_NEEDS.items():
        depends = compose["services"][name]["depends_on"]
        assert set(depends) == needs, name
        for dep, cond in depends.items():
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}"


def test_compose_config_is_valid_with_the_gpu_profile():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not on PATH (scripts/ci-system-deps.sh installs it)")
    out = subprocess.run([exe, "-f", str(COMPOSE_FILE), "--profile", "gpu", "config", "-q"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, f"docker-compose --profile gpu config -q failed:\n{out.stderr}"


def test_compose_gpu_profile_reserves_a_gpu_per_model_service(compose):
    for name, cpu_name in GPU_SERVICES.items():
        svc, cpu = compose["services"][name], compose["services"][cpu_name]
        assert svc["profiles"] == ["gpu"], name
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and device["count"] == 1, name
        assert svc["environment"]["WORLDENV_DEVICE"] == "cuda", name
        assert svc["environment"]["WORLDENV_DTYPE"] == "bfloat16", name
        assert svc["image"].endswith("-cuda") and svc["build"]["args"]["TORCH_VARIANT"].startswith("cu"), name
        assert svc["command"] == cpu["command"] and "models:/models:ro" in svc["volumes"], name
        assert svc["healthcheck"]["test"] == cpu["healthcheck"]["test"], name
    worker = compose["services"]["worker-gpu"]["environment"]
    for name in GPU_SERVICES:
        key = f"WORLDENV_{GPU_SERVICES[name].upper().replace('-', '_')}_ADDR"
        assert worker[key].startswith(f"dns:///{name}:"), key
    for name in ("redis", *SERVICES, "worker"):  # the default stack stays CPU-only
        assert "profiles" not in compose["services"][name] and "deploy" not in compose["services"][name], name


def test_compose_redis_persists(compose):
    redis = compose["services"]["redis"]
    assert redis["command"][-2:] == ["--appendonly", "yes"]
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_compose_models_volume_is_read_only(compose):
    assert "models" in compose["volumes"]
    for name in GRPC_SERVICES:
        assert "models:/models:ro" in compose["services"][name]["volumes"], name


def test_compose_services_are_labelled_for_prometheus(compose):
    for name in {*METRICS_PODS, *GPU_SERVICES, "worker-gpu"}:
        svc = compose["services"][name]
        labels = svc.get("labels", {})
        assert labels.get("prometheus.io/scrape") == "true" and labels.get("prometheus.io/path") == "/metrics", name
        port = labels["prometheus.io/port"]
        if name == "debug-api":
            assert f"{port}:{port}" in svc["ports"]
        else:
            assert svc["environment"]["WORLDENV_METRICS_PORT"] == port and port in svc["expose"], name


# ---- Dockerfile ---------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (op, _) in enumerate(instructions) if op == "FROM"]
    return instructions[starts[-1]:]


def test_dockerfile_runs_as_non_root():
    stage = final_stage(dockerfile_instructions())
    users = [arg for op, arg in stage if op == "USER"]
    assert users, "the final stage sets no USER"
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for op, a in dockerfile_instructions() if op == "ARG")))
    user = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), users[-1]).split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"


def test_dockerfile_entrypoint_and_base():
    ins = dockerfile_instructions()
    assert ("ENTRYPOINT", '["worldenv"]') in ins
    assert any(op == "ARG" and "python:3.11-slim" in arg for op, arg in ins)


def test_dockerfile_torch_pin_matches_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    (pinned,) = re.findall(r'"torch==([^"]+)"', pyproject)
    dockerfile = DOCKERFILE.read_text()
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(pinned)}$", dockerfile, re.M), \
        f"Dockerfile TORCH_VERSION differs from pyproject torch=={pinned}"
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", dockerfile, re.M), "the default image must be the CPU build"
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"' in dockerfile


def test_trainer_is_a_job_that_keeps_its_runs_and_runs_as_non_root(rendered):
    job = by_kind(rendered, "Job")["trainer"]
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][:2] == ["train", "rl"] and pod["restartPolicy"] == "OnFailure"
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"cpu", "memory"} <= set(c["resources"]["limits"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    claim = volumes[mounts["/runs"]]["persistentVolumeClaim"]["claimName"]
    assert claim in by_kind(rendered, "PersistentVolumeClaim")
    env = {e["name"]: e for e in c["env"]}
    assert env["WORLDENV_POLICY_ADDR"]["value"] == f"dns:///policy:{GRPC_SERVICES['policy']}", "every policy pod"
    keys = set(by_kind(rendered, "ConfigMap")["worldenv-config"]["data"])
    assert {e["valueFrom"]["configMapKeyRef"]["key"] for e in c["env"] if "configMapKeyRef" in e.get("valueFrom", {})} <= keys


def test_compose_trainer_is_opt_in_and_keeps_its_runs(compose):
    trainer = compose["services"]["trainer"]
    assert trainer["profiles"] == ["train"] and trainer["command"][:2] == ["train", "rl"]
    assert any(str(v).endswith(":/runs") or (isinstance(v, dict) and v.get("target") == "/runs") for v in trainer["volumes"])
    assert trainer["depends_on"]["policy"]["condition"] == "service_healthy"


def test_dockerfile_sets_the_allocator_thresholds_the_services_expect():
    from worldenv.services.common.memory import ALLOCATOR_ENV

    stage = " ".join(arg for op, arg in final_stage(dockerfile_instructions()) if op == "ENV")
    assert dict(re.findall(r"(MALLOC_\w+)=(\S+)", stage)) == ALLOCATOR_ENV


def test_workers_reclaim_a_dead_workers_jobs_after_about_ten_steps(rendered, rendered_gpu, compose):
    # not the 60 s default on CPU: a worker touches its jobs every step (tiny models: ~0.1-1 s)
    cpu = by_kind(rendered, "ConfigMap")["worldenv-config"]["data"]["WORLDENV_RECLAIM_IDLE_S"]
    gpu = by_kind(rendered_gpu, "ConfigMap")["worldenv-config"]["data"]["WORLDENV_RECLAIM_IDLE_S"]
    assert float(cpu) == 10 and float(gpu) == 60
    (c,) = containers(workloads(rendered)["worker"])
    assert {"name": "WORLDENV_RECLAIM_IDLE_S", "valueFrom": {"configMapKeyRef": {
        "name": "worldenv-config", "key": "WORLDENV_RECLAIM_IDLE_S"}}} in c["env"]
    assert compose["services"]["worker"]["environment"]["WORLDENV_RECLAIM_IDLE_S"] == "10"
    assert compose["services"]["worker-gpu"]["environment"]["WORLDENV_RECLAIM_IDLE_S"] == "60"


def test_policy_replicas_load_the_trainers_weights_from_redis(rendered, rendered_gpu, compose):
    # A pod added or replaced later serves the trainer's newest version by itself: it reads the
    # weights store in the Redis (and under the prefix) the trainer publishes to.
    for docs in (rendered, rendered_gpu):
        (c,) = containers(workloads(docs)["policy"])
        env = {e["name"]: e for e in c["env"]}
        assert env["WORLDENV_WEIGHTS_REDIS_URL"]["valueFrom"]["configMapKeyRef"]["key"] == "REDIS_URL"
        assert env["WORLDENV_WEIGHTS_PREFIX"]["valueFrom"]["configMapKeyRef"]["key"] == "WORLDENV_PREFIX"
        trainer = {e["name"]: e for e in by_kind(docs, "Job")["trainer"]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert trainer["WORLDENV_PREFIX"]["valueFrom"]["configMapKeyRef"]["key"] == "WORLDENV_PREFIX"
    services = compose["services"]
    for name in ("policy", "policy-gpu"):
        env = services[name]["environment"]
        assert env["WORLDENV_WEIGHTS_REDIS_URL"] == services["trainer"]["environment"]["REDIS_URL"]
        assert env["WORLDENV_WEIGHTS_PREFIX"] == services["trainer"]["environment"]["WORLDENV_PREFIX"]
    assert services["trainer"]["environment"]["WORLDENV_POLICY_ADDR"] == "dns:///policy:50053"
