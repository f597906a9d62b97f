"""deploy/ is not run here (no container engine); check it says what the code does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from app import api, serve
from app.config import load_all

ROOT = Path(__file__).resolve().parents[2]


def _k8s() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs)
    return by_kind


def test_k8s_manifests_parse_and_probe_real_routes() -> None:
    docs = _k8s()
    assert set(docs) == {"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler",
                         "PodDisruptionBudget"}
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    paths = {r.path for r in api.routes()}
    assert container["readinessProbe"]["httpGet"]["path"] in paths
    assert container["livenessProbe"]["httpGet"]["path"] in paths
    assert pod["metadata"]["annotations"]["prometheus.io/path"] in paths
    assert container["ports"][0]["containerPort"] == 8080
    # The pod's grace period outlasts gunicorn's graceful drain.
    assert pod["spec"]["terminationGracePeriodSeconds"] > 20


def test_k8s_config_map_is_valid_settings_and_the_scalers_target_the_deployment() -> None:
    docs = _k8s()
    sources = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"configMapRef": {"name": "godmode-store"}} in sources and {"secretRef": {"name": "godmode-store"}} in sources
    env = {**docs["ConfigMap"]["data"], **docs["Secret"]["stringData"]}
    assert all(isinstance(v, str) for v in env.values())
    server, settings = load_all(env)  # raises with every problem if the manifests hold a bad value
    assert server.workers == 2 and settings.log_level == "info"
    hpa, pdb = docs["HorizontalPodAutoscaler"], docs["PodDisruptionBudget"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "godmode-store"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can always evict one pod


def test_compose_runs_two_api_instances_on_redis_with_aof() -> None:
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    services = compose["services"]
    apis = [s for name, s in services.items() if name.startswith("api")]
    assert len(apis) == 2
    for svc in apis:
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["environment"]["REDIS_URL"].startswith("redis://redis:")
        load_all(svc["environment"])
        assert all(port.startswith("127.0.0.1:") for port in svc["ports"])  # not on every interface
    assert len({p for svc in apis for p in svc["ports"]}) == 2
    mounts = services["redis"]["volumes"]
    assert any(m.startswith("./redis.conf:") for m in mounts)
    assert "appendonly yes" in (ROOT / "deploy/redis.conf").read_text()


def test_dockerfile_runs_the_same_entry_point_as_make_run() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    assert cmd is not None and cmd.group(1) == '["python", "-m", "app.serve"]'
    assert '"$PY" -m app.serve &' in (ROOT / "scripts/run.sh").read_text()
    assert serve.COMMAND[-3:] == ("-c", "gunicorn.conf.py", "app.asgi:app")
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        assert (ROOT / copied).exists()


def test_cluster_nodes_keep_serving_the_other_partitions_during_a_failover() -> None:
    conf = dict(line.split(None, 1) for line in (ROOT / "deploy/redis-cluster.conf").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    assert conf["cluster-enabled"] == "yes" and conf["maxmemory-policy"] == "noeviction"
    # tests/cluster runs its cluster with this same setting: the failover test proves what it buys.
    assert conf["cluster-require-full-coverage"] == "no"
    assert '"--cluster-require-full-coverage", "no"' in (ROOT / "tests/cluster/conftest.py").read_text()
