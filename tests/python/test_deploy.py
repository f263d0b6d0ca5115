"""deploy/: the Dockerfile, the Kubernetes manifests and the KServe ServingRuntime parse, agree
with each other, and agree with the real pyflame-serve (its --help, its default ports, its health
endpoints). The server binary is found like the serving tests find it; without it these tests
fail and say so.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

import serving_server

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The ports pyflame-serve listens on when no flag or config file says otherwise (ServerConfig's
# defaults in the reference; checked against --help below).
DEFAULT_PORTS = {"http": 8080, "grpc": 9090, "metrics": 9091}
PORT_FLAGS = {"--http-port": "http", "--grpc-port": "grpc", "--metrics-port": "metrics"}
LIVE, READY = "/v2/health/live", "/v2/health/ready"


def load_yaml(relative):
    with open(DEPLOY / relative) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def only(docs, kind):
    matches = [d for d in docs if d.get("kind") == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def dockerfile_instructions():
    """[(INSTRUCTION, arguments)] with line continuations joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    result = []
    for line in logical:
        instruction, _, arguments = line.strip().partition(" ")
        result.append((instruction.upper(), arguments.strip()))
    return result


def exec_form(arguments):
    """The argv of a JSON exec-form instruction (CMD ["a", "b"])."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"not exec form: {arguments}"
    return parsed


def flag_values(args):
    """{--flag: value} of an argv of `--flag value` / `--flag=value` pairs (values as strings)."""
    values, i = {}, 0
    args = [str(a) for a in args]
    while i < len(args):
        arg = args[i]
        assert arg.startswith("--"), f"unexpected argument {arg!r} in {args}"
        if "=" in arg:
            flag, value = arg.split("=", 1)
            i += 1
        else:
            flag, value = arg, args[i + 1]
            i += 2
        values[flag] = value
    return values


@pytest.fixture(scope="module")
def server_binary():
    binary = serving_server.find_server_binary()
    if binary is None or not Path(binary).exists():
        pytest.fail("pyflame-serve is not built: build the pyflame-serve CMake target (or set "
                    "PYFLAME_SERVE_BIN); the deploy files are checked against its --help")
    return binary


@pytest.fixture(scope="module")
def server_help(server_binary):
    proc = subprocess.run([server_binary, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def help_flags(help_text):
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))


def server_args_everywhere():
    """(where, argv) of every place the deploy files start pyflame-serve."""
    places = []
    instructions = dockerfile_instructions()
    cmd = [a for i, a in instructions if i == "CMD"]
    places.append(("Dockerfile CMD", exec_form(cmd[-1])))
    deployment = only(load_yaml("kubernetes/deployment.yaml"), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    places.append(("Deployment args", container["args"]))
    runtime = only(load_yaml("kserve/serving-runtime.yaml"), "ServingRuntime")
    places.append(("ServingRuntime args", runtime["spec"]["containers"][0]["args"]))
    return places


# ------------------------------------------------------------------------------- the server

def test_default_ports_are_the_servers(server_help):
    # Each port flag's line in --help names its default.
    for flag, listener in PORT_FLAGS.items():
        lines = [line for line in server_help.splitlines() if flag in line]
        assert lines, f"{flag} is not in pyflame-serve --help"
        assert str(DEFAULT_PORTS[listener]) in " ".join(lines), (flag, lines)


@pytest.mark.parametrize("where", ["Dockerfile CMD", "Deployment args", "ServingRuntime args"])
def test_server_flags_exist_and_ports_are_the_defaults(where, server_help):
    args = dict(server_args_everywhere())[where]
    values = flag_values(args)
    unknown = set(values) - help_flags(server_help)
    assert not unknown, f"{where} uses flags pyflame-serve --help does not document: {unknown}"
    assert "--model-repository" in values
    for flag, listener in PORT_FLAGS.items():
        assert int(values[flag]) == DEFAULT_PORTS[listener], (where, flag)


def test_the_deployments_command_line_serves_the_probe_paths(tmp_path, server_binary):
    """Start the real server with the Deployment's arguments (ports and repository moved to free
    ones on loopback) and ask the probe paths."""
    repo = serving_server.make_repository(tmp_path, {"mlp": serving_server.mlp_model()})
    values = flag_values(dict(server_args_everywhere())["Deployment args"])
    ports = {flag: serving_server.free_port() for flag in PORT_FLAGS}
    values.update({flag: str(port) for flag, port in ports.items()})
    values["--model-repository"] = str(repo)
    args = [server_binary, "--host", "127.0.0.1"] + [x for kv in values.items() for x in kv]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client_url = f"http://127.0.0.1:{ports['--http-port']}"
        from pyflame_rt.serving import ModelClient

        assert ModelClient(client_url).wait_for_ready(timeout=60, poll_interval=0.1), \
            f"not ready: {shlex.join(args)}"
        for path in (LIVE, READY):
            with urllib.request.urlopen(client_url + path, timeout=5) as answer:
                assert answer.status == 200, path
        metrics = f"http://127.0.0.1:{ports['--metrics-port']}/metrics"
        with urllib.request.urlopen(metrics, timeout=5) as answer:
            assert b"pyflame_" in answer.read()
    finally:
        process.terminate()
        process.wait(30)


# ---------------------------------------------------------------------------------- Docker

def test_dockerfile():
    instructions = dockerfile_instructions()
    by_kind = {}
    for instruction, arguments in instructions:
        by_kind.setdefault(instruction, []).append(arguments)
    base = by_kind["FROM"][0]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-(slim-)?bookworm", base), \
        f"base image {base} is not Debian 12 (bookworm) with Python 3.11"
    exposed = {int(p.split("/")[0]) for line in by_kind["EXPOSE"] for p in line.split()}
    assert exposed == set(DEFAULT_PORTS.values())
    healthcheck = by_kind["HEALTHCHECK"][0]
    assert f"http://127.0.0.1:{DEFAULT_PORTS['http']}{LIVE}" in healthcheck
    assert exec_form(by_kind["ENTRYPOINT"][-1]) == ["pyflame-serve"]
    # Built from source with the project's own scripts.
    build = " ".join(by_kind["RUN"])
    assert "scripts/setup-env.sh" in build and (ROOT / "scripts/setup-env.sh").is_file()
    assert "PYFLAME_BUILD_TESTS=OFF" in " ".join(by_kind["ENV"])
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "build" in ignored and ".venv" in ignored


# ------------------------------------------------------------------------------ Kubernetes

def test_deployment_probes_and_ports():
    deployment = only(load_yaml("kubernetes/deployment.yaml"), "Deployment")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == DEFAULT_PORTS
    assert container["livenessProbe"]["httpGet"] == {"path": LIVE, "port": ports["http"]}
    assert container["readinessProbe"]["httpGet"] == {"path": READY, "port": ports["http"]}
    assert container["startupProbe"]["httpGet"] == {"path": LIVE, "port": ports["http"]}
    assert "cpu" in container["resources"]["requests"], "the HPA's CPU utilization needs a request"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert flag_values(container["args"])["--model-repository"] == mounts["models"]
    annotations = pod["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == DEFAULT_PORTS["metrics"]


def test_service_targets_the_deployments_ports():
    deployment = only(load_yaml("kubernetes/deployment.yaml"), "Deployment")
    service = only(load_yaml("kubernetes/service.yaml"), "Service")
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container_ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == set(DEFAULT_PORTS)
    for name, port in ports.items():
        assert port["port"] == DEFAULT_PORTS[name]
        assert port["targetPort"] in container_ports


def test_autoscaler_scales_the_deployment():
    deployment = only(load_yaml("kubernetes/deployment.yaml"), "Deployment")
    hpa = only(load_yaml("kubernetes/hpa.yaml"), "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    metric = hpa["spec"]["metrics"][0]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] <= 100


def test_kustomization_lists_every_manifest():
    kustomization = load_yaml("kubernetes/kustomization.yaml")[0]
    files = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    pvc = only(load_yaml("kubernetes/models-pvc.yaml"), "PersistentVolumeClaim")
    deployment = only(load_yaml("kubernetes/deployment.yaml"), "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


# ---------------------------------------------------------------------------------- KServe

def test_kserve_serving_runtime():
    runtime = only(load_yaml("kserve/serving-runtime.yaml"), "ServingRuntime")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    spec = runtime["spec"]
    assert "v2" in spec["protocolVersions"] and "grpc-v2" in spec["protocolVersions"]
    assert {f["name"] for f in spec["supportedModelFormats"]} == {"onnx", "pfm"}
    container = spec["containers"][0]
    assert container["name"] == "kserve-container"
    assert flag_values(container["args"])["--model-repository"] == "/mnt/models"
    assert int(spec["annotations"]["prometheus.kserve.io/port"]) == DEFAULT_PORTS["metrics"]

    service = only(load_yaml("kserve/inference-service.yaml"), "InferenceService")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}
    assert model["protocolVersion"] in spec["protocolVersions"]


def test_readme_documents_every_file():
    readme = (DEPLOY / "README.md").read_text()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert str(path.relative_to(DEPLOY)) in readme, f"deploy/README.md does not mention {path}"
