"""deploy/ is not run here (no container engine); check it says what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app import api

ROOT = Path(__file__).resolve().parents[2]


def test_k8s_manifests_parse_and_probe_real_routes() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s.yaml").read_text()))
    assert {d["kind"] for d in docs} == {"Secret", "Deployment", "Service"}
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    paths = {r.path for r in api.routes()}
    assert container["readinessProbe"]["httpGet"]["path"] in paths
    assert container["livenessProbe"]["httpGet"]["path"] in paths
    assert container["ports"][0]["containerPort"] == 8080


def test_dockerfile_runs_the_same_entry_point_as_make_run() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    assert cmd is not None and '"gunicorn.conf.py", "app.asgi:app"' in cmd.group(1)
    assert "gunicorn.conf.py app.asgi:app" in (ROOT / "scripts/run.sh").read_text()
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        assert (ROOT / copied).exists()
