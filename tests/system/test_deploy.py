"""The Docker and Kubernetes files, checked with MLflow's own code (not run here: there is no
cluster): the Kubernetes MLproject loads and matches the repository's entry points, the backend
config and Job template are what `mlflow run --backend kubernetes` reads, and the Dockerfile
installs what pyproject.toml pins."""

import json
import re
import tomllib
from pathlib import Path

import yaml
from mlflow.projects import _parse_kubernetes_config
from mlflow.projects._project_spec import load_project
from mlflow.projects.kubernetes import _get_kubernetes_job_definition

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"


def test_the_kubernetes_project_runs_the_repository_entry_points_in_the_project_image():
    project = load_project(str(K8S))
    assert project.docker_env["image"] == "medrobust"
    root = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    ours = yaml.safe_load((K8S / "MLproject").read_text())["entry_points"]
    assert set(ours) <= set(root) and {"pipeline", "tune"} <= set(ours)
    for name, entry in ours.items():
        assert entry["command"] == root[name]["command"], name
        differ = {p for p in entry["parameters"] if entry["parameters"][p] != root[name]["parameters"][p]}
        assert differ <= {"file"}, (name, differ)  # pipelines are read from the image
    file = ours["pipeline"]["parameters"]["file"]["default"]
    assert file.startswith("/opt/medrobust/") and (REPO / file.removeprefix("/opt/medrobust/")).is_file()


def test_the_backend_config_and_job_template_are_what_mlflow_reads(monkeypatch):
    monkeypatch.chdir(REPO)  # mlflow run is started in the repository
    config = _parse_kubernetes_config(json.loads((K8S / "kubernetes_config.json").read_text()))
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", "http://tracking.medrobust:5000")
    job = _get_kubernetes_job_definition("medrobust", config["repository-uri"], "sha256:0",
                                         ["python", "-m", "medrobust", "tune"], {"MLFLOW_RUN_ID": "r1"},
                                         config["kube-job-template"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.org/medrobust/medrobust@sha256:0"
    assert container["command"] == ["python", "-m", "medrobust", "tune"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://tracking.medrobust:5000" and env["MLFLOW_RUN_ID"] == "r1"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["MEDROBUST_DATA"] in mounts and env["MEDROBUST_CACHE"] in mounts
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert job["kind"] == "Job" and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_dockerfile_installs_the_pinned_package():
    text = (REPO / "Dockerfile").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M) and "3.11" in project["requires-python"]
    pins = dict(d.split("==") for d in project["dependencies"])
    assert f'"tensorflow[and-cuda]=={pins["tensorflow-cpu"]}"' in text  # the GPU build of the same version
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), path
    ignored = (REPO / ".dockerignore").read_text().split()
    assert not {"src", "pipelines", "pyproject.toml", "MLproject"} & set(ignored)
    template = yaml.safe_load((K8S / "job_template.yaml").read_text())
    env = {e["name"]: e["value"] for e in template["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert f"MEDROBUST_DATA={env['MEDROBUST_DATA']}" in text and f"MEDROBUST_CACHE={env['MEDROBUST_CACHE']}" in text
