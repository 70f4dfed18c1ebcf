"""docker-compose.yml and deploy/ checked without Docker: what `docker compose config` would catch (syntax,
interpolation, references), plus the things that only break at run time (ports that disagree, a node that mounts
another node's config, an SSE proxy that buffers, an image that runs as root)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

from sluice_cli.main import build_parser  # noqa: E402 - after the importorskip

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
NATS_NODES = ("nats-1", "nats-2", "nats-3")
SLUICE_SERVICES = ("edge-1", "edge-2", "agent-runner", "tool-runner", "demo-llm", "provision")
# Jaeger: tracing is off every task's path, so nothing waits on it (see the comment in the compose file).
# provision: a one-shot job; what waits for it waits for it to have exited 0.
WITHOUT_HEALTHCHECK = {"jaeger", "provision"}
# The compose services that connect to NATS, and the identity (sluice.permissions) each connects as.
NATS_IDENTITY = {"edge-1": "edge", "edge-2": "edge", "agent-runner": "agent-runner", "tool-runner": "tool-runner",
                 "provision": "admin"}  # fmt: skip
_VAR = re.compile(r"\$\{([^}]*)\}")


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}` / `${VAR:-default}` substitution, as `docker compose config` does with `env`."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, _, default = match.group(1).partition(":-")
        return env.get(name) or default

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def raw() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(raw: str) -> dict[str, Any]:
    return dict(_interpolate(yaml.safe_load(raw), {}))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _health_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"https?://[^'\" ]+", test)
    assert match, f"healthcheck without a URL: {test}"
    return match.group(0)


def _nats_conf(path: Path) -> dict[str, Any]:
    """The few settings the cluster depends on, read from the NATS config syntax."""
    text = re.sub(r"#.*", "", path.read_text())
    out: dict[str, Any] = {}
    for key in ("server_name", "listen", "http", "store_dir"):
        match = re.search(rf"^\s*{key}\s*[:=]\s*(\S+)", text, re.MULTILINE)
        out[key] = match.group(1).strip("\"'") if match else None
    cluster = re.search(r"cluster\s*\{(.*?)\n\}", text, re.DOTALL)
    assert cluster, f"{path.name}: no cluster block"
    routes = re.search(r"routes\s*[:=]?\s*\[(.*?)\]", cluster.group(1), re.DOTALL)
    out["routes"] = routes.group(1).split() if routes else []
    listen = re.search(r"listen\s*[:=]\s*(\S+)", cluster.group(1))
    out["cluster_listen"] = listen.group(1) if listen else None
    out["jetstream"] = re.search(r"^\s*jetstream\s*\{", text, re.MULTILINE) is not None
    assert text.count("{") == text.count("}"), f"{path.name}: unbalanced braces"
    return out


# ---------------------------------------------------------------- compose: structure and references


def test_compose_interpolation_needs_no_environment(raw: str) -> None:
    for expr in _VAR.findall(raw):
        assert ":-" in expr, f"${{{expr}}} has no default: `docker compose config` would warn and leave it empty"
    assert "$" not in re.sub(r"\$\{[^}]*\}|\$\$", "", raw), "a bare $VAR is ambiguous in compose files"


def test_compose_has_the_cluster_the_replicas_and_the_tools(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= {*NATS_NODES, *SLUICE_SERVICES, "jaeger", "lb"}
    for runner in ("agent-runner", "tool-runner"):
        assert services[runner]["deploy"]["replicas"] == 2
    for node in NATS_NODES:
        assert services[node]["image"].startswith("nats:2.11")
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_every_dependency_exists_and_there_is_no_cycle(services: dict[str, dict[str, Any]]) -> None:
    graph = {name: set(svc.get("depends_on", {})) for name, svc in services.items()}
    for name, deps in graph.items():
        assert deps <= set(services), f"{name} depends on unknown {deps - set(services)}"
        for dep, rule in services[name].get("depends_on", {}).items():
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, which has no check"
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"dependency cycle {' -> '.join((*path, node))}"
        if node not in done:
            for dep in graph[node]:
                visit(dep, (*path, node))
            done.add(node)

    for node in graph:
        visit(node, ())


def test_every_service_but_jaeger_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        if name in WITHOUT_HEALTHCHECK:
            continue
        check = svc.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_bind_mounts_and_build_files_exist_and_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        if "build" in svc:
            context = ROOT / svc["build"]["context"]
            assert (context / svc["build"]["dockerfile"]).is_file(), name
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_published_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    published = [str(p).rsplit(":", 1)[0] for svc in services.values() for p in svc.get("ports", [])]
    assert len(published) == len(set(published)), published


# ---------------------------------------------------------------- the Sluice services


def test_sluice_services_share_one_image_and_run_real_subcommands(services: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    images = {services[name]["image"] for name in SLUICE_SERVICES}
    assert len(images) == 1
    for name in SLUICE_SERVICES:
        svc = services[name]
        assert svc["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
        args = parser.parse_args(svc["command"])
        assert args.command == svc["command"][0]


def test_sluice_services_reach_every_nats_node_and_export_to_jaeger(services: dict[str, dict[str, Any]]) -> None:
    node_ports = {node: _nats_conf(DEPLOY / "nats" / f"n{i}.conf")["listen"].rsplit(":", 1)[1]
                  for i, node in enumerate(NATS_NODES, 1)}  # fmt: skip
    for name in SLUICE_SERVICES:
        env = _env(services[name])
        urls = [urlsplit(u) for u in env["SLUICE_NATS_URL"].split(",")]
        assert {(u.hostname, str(u.port)) for u in urls} == {(n, p) for n, p in node_ports.items()}, name
        assert env["SLUICE_REPLICAS"] == "3"
        endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert endpoint.hostname == "jaeger"
        protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        assert endpoint.port == (4317 if protocol == "grpc" else 4318), f"{name}: {protocol} to port {endpoint.port}"
        assert env["OTEL_SERVICE_NAME"].startswith("sluice-")


def test_every_variable_set_in_compose_is_one_sluice_reads(services: dict[str, dict[str, Any]]) -> None:
    sources = "\n".join(p.read_text() for d in ("shared", "services") for p in (ROOT / d).rglob("*.py"))
    otel_read = {
        "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_TRACES_SAMPLER",
        "OTEL_RESOURCE_ATTRIBUTES", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    }  # fmt: skip
    for name in SLUICE_SERVICES:
        for key in _env(services[name]):
            if key.startswith("OTEL_"):
                assert key in otel_read, f"{name}: {key} is not honoured"
            else:
                assert f'"{key}"' in sources, f"{name}: nothing reads {key} (a typo?)"


def test_healthchecks_probe_the_ports_the_services_listen_on(services: dict[str, dict[str, Any]]) -> None:
    port_setting = {
        "edge-1": ("SLUICE_HTTP_PORT", "/readyz"),
        "edge-2": ("SLUICE_HTTP_PORT", "/readyz"),
        "demo-llm": ("SLUICE_DEMO_LLM_PORT", "/healthz"),
        "agent-runner": ("SLUICE_RUNNER_METRICS_PORT", "/metrics"),
        "tool-runner": ("SLUICE_TOOL_METRICS_PORT", "/metrics"),
    }
    for name, (variable, path) in port_setting.items():
        url = urlsplit(_health_url(services[name]))
        assert (str(url.port), url.path) == (_env(services[name])[variable], path), name
    for i, node in enumerate(NATS_NODES, 1):
        url = urlsplit(_health_url(services[node]))
        assert str(url.port) == _nats_conf(DEPLOY / "nats" / f"n{i}.conf")["http"].rsplit(":", 1)[1]
    assert urlsplit(_health_url(services["lb"])).path == "/lb-healthz"


def test_http_services_listen_on_all_interfaces_inside_their_containers(services: dict[str, dict[str, Any]]) -> None:
    assert _env(services["edge-1"])["SLUICE_HTTP_HOST"] == "0.0.0.0"
    assert _env(services["demo-llm"])["SLUICE_DEMO_LLM_HOST"] == "0.0.0.0"
    assert _env(services["agent-runner"])["SLUICE_DEMO_LLM_HOST"] == "demo-llm"


# ---------------------------------------------------------------- NATS cluster


def test_each_nats_node_mounts_its_own_config_and_a_data_volume(services: dict[str, dict[str, Any]]) -> None:
    names = set()
    for i, node in enumerate(NATS_NODES, 1):
        conf_path = DEPLOY / "nats" / f"n{i}.conf"
        conf = _nats_conf(conf_path)
        mounts = dict(v.split(":")[:2] for v in services[node]["volumes"])  # source -> target
        assert mounts[f"./deploy/nats/n{i}.conf"] == "/etc/nats/nats.conf"
        assert services[node]["command"] == ["--config", "/etc/nats/nats.conf"]
        assert conf["jetstream"] and conf["store_dir"] in mounts.values(), f"{node}: JetStream store not on a volume"
        names.add(conf["server_name"])
    assert len(names) == 3, "server names must differ"


def test_the_nats_routes_connect_all_three_nodes(services: dict[str, dict[str, Any]]) -> None:
    for i in range(1, 4):
        conf = _nats_conf(DEPLOY / "nats" / f"n{i}.conf")
        port = conf["cluster_listen"].rsplit(":", 1)[1]
        routes = {(urlsplit(r).hostname, str(urlsplit(r).port)) for r in conf["routes"]}
        assert routes == {(node, port) for node in NATS_NODES}


# ---------------------------------------------------------------- load balancer


def test_the_load_balancer_streams_unbuffered_to_both_edges(services: dict[str, dict[str, Any]]) -> None:
    text = re.sub(r"#.*", "", (DEPLOY / "nginx.conf").read_text())
    assert text.count("{") == text.count("}")
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", text, re.DOTALL)
    assert upstream
    servers = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", upstream.group(2), re.MULTILINE))
    assert servers == {f"{e}:{_env(services[e])['SLUICE_HTTP_PORT']}" for e in ("edge-1", "edge-2")}
    assert re.search(rf"proxy_pass\s+http://{upstream.group(1)};", text)
    for directive in ("proxy_buffering off;", "proxy_cache off;", "gzip off;", "proxy_http_version 1.1;"):
        assert directive in text, directive
    read_timeout = re.search(r"proxy_read_timeout\s+(\d+)([smh]?);", text)
    assert read_timeout and int(read_timeout.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[read_timeout.group(2)] > 60
    listen = re.search(r"listen\s+(\d+);", text)
    assert listen and any(str(p).endswith(f":{listen.group(1)}") for p in services["lb"]["ports"])
    assert "location = /lb-healthz" in text
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in services["lb"]["volumes"]


# ---------------------------------------------------------------- the image


def test_the_image_installs_the_project_and_runs_sluice_as_a_non_root_user() -> None:
    lines = [ln.strip() for ln in (DEPLOY / "Dockerfile").read_text().splitlines() if not ln.startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert froms and all(f == "python:3.11-slim" for f in froms)
    assert any("pip install ." in ln for ln in lines)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["sluice"]' in lines
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "sluice" in project["scripts"]
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"COPY of missing {source}"


def test_the_build_context_keeps_what_the_image_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    kept = {p[1:] for p in ignore if p.startswith("!")}
    copied = {
        source
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    }
    for source in copied:
        assert source in kept or f"{source}/**" in kept, f"{source} is copied but ignored by the build context"


# ---------------------------------------------------------------- NATS least privilege (CONTRACT §8)


def _secret_files(compose: dict[str, Any]) -> dict[str, str]:
    return {name: spec["file"] for name, spec in (compose.get("secrets") or {}).items()}


def _secret_targets(service: dict[str, Any]) -> dict[str, str]:
    """secret name -> where the service sees it (compose's default target is /run/secrets/<name>)."""
    out = {}
    for item in service.get("secrets", []):
        if isinstance(item, str):
            out[item] = f"/run/secrets/{item}"
        else:
            out[item["source"]] = item.get("target", f"/run/secrets/{item['source']}")
    return out


def test_the_nats_client_port_is_not_published_to_the_host(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert not str(port).endswith(":4222") and str(port) != "4222", f"{name} publishes NATS: {port}"


def test_each_service_connects_over_tls_as_its_own_identity_with_only_its_own_seed(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    from sluice.permissions import IDENTITIES

    files = _secret_files(compose)
    for name, identity in NATS_IDENTITY.items():
        assert identity in IDENTITIES, identity
        env, mounted = _env(services[name]), _secret_targets(services[name])
        seeds = [s for s in mounted if files[s].endswith(".nk")]
        assert len(seeds) == 1, f"{name} mounts the seeds {seeds}: one identity per service"
        assert files[seeds[0]] == f"./deploy/secrets/nats/{identity}.nk", name
        assert env["SLUICE_NATS_NKEY_FILE"] == mounted[seeds[0]], name
        assert all(urlsplit(u).scheme == "tls" for u in env["SLUICE_NATS_URL"].split(",")), name
        assert env["SLUICE_NATS_TLS_CA"] in mounted.values() and files["nats-ca"] == "./deploy/secrets/tls/ca.pem"
    for name in set(services) - set(NATS_IDENTITY):
        assert not any(files[s].endswith(".nk") for s in _secret_targets(services[name])), f"{name} needs no seed"


def test_every_secret_is_one_make_secrets_writes_and_git_ignores(compose: dict[str, Any]) -> None:
    from sluice.permissions import IDENTITIES

    script = (DEPLOY / "make-secrets.sh").read_text()
    assert "nats-auth" in script and (DEPLOY / "make-secrets.sh").stat().st_mode & 0o111
    made = {"nats/auth.conf", "tls/ca.pem", "tls/nats.pem", "tls/nats-key.pem"}
    made |= {f"nats/{identity}.nk" for identity in IDENTITIES}
    for tls_file in ("ca.pem", "nats.pem", "nats-key.pem"):
        assert f"$tls/{tls_file}" in script, tls_file
    for name, path in _secret_files(compose).items():
        assert path.startswith("./deploy/secrets/") and path.removeprefix("./deploy/secrets/") in made, name
    assert "deploy/secrets/" in (ROOT / ".gitignore").read_text().splitlines()


def test_only_provision_administers_and_every_nats_service_waits_for_it(services: dict[str, dict[str, Any]]) -> None:
    assert services["provision"]["command"][0] == "provision"
    assert services["provision"]["restart"] == "no"
    for node in NATS_NODES:
        assert services["provision"]["depends_on"][node]["condition"] == "service_healthy"
    for name in set(NATS_IDENTITY) - {"provision"}:
        rule = services[name]["depends_on"]["provision"]
        assert rule["condition"] == "service_completed_successfully", name


def test_each_nats_node_requires_tls_and_the_generated_authorization(services: dict[str, dict[str, Any]]) -> None:
    for i, node in enumerate(NATS_NODES, 1):
        text = re.sub(r"#.*", "", (DEPLOY / "nats" / f"n{i}.conf").read_text())
        assert re.search(r'^include\s+"auth\.conf"', text, re.MULTILINE), node
        tls = re.search(r"^tls\s*\{(.*?)\n\}", text, re.DOTALL | re.MULTILINE)
        assert tls, f"{node}: no tls block"
        mounted = _secret_targets(services[node])
        assert mounted["nats-auth"] == "/etc/nats/auth.conf", "the include is resolved beside nats.conf"
        for key, secret in (("cert_file", "nats-cert"), ("key_file", "nats-key")):
            value = re.search(rf"{key}\s*[:=]\s*\"?([^\"\s]+)", tls.group(1))
            assert value and value.group(1) == mounted[secret], f"{node}: {key}"


def test_every_nats_node_syncs_before_acknowledging(services: dict[str, dict[str, Any]]) -> None:
    """The README says no acknowledged event is lost on power failure: that holds only with sync_interval: always."""
    for i in range(1, 4):
        text = re.sub(r"#.*", "", (DEPLOY / "nats" / f"n{i}.conf").read_text())
        jetstream = re.search(r"^jetstream\s*\{(.*?)\n\}", text, re.DOTALL | re.MULTILINE)
        assert jetstream and re.search(r"sync_interval\s*[:=]\s*always", jetstream.group(1)), f"n{i}.conf"


def test_the_public_edges_run_with_keys_and_share_one_stream_token_secret(services: dict[str, dict[str, Any]]) -> None:
    from sluice.config import EnvReader
    from stream_edge.auth.settings import AuthSettings

    for name in ("edge-1", "edge-2"):
        env = _env(services[name])
        assert env["SLUICE_AUTH"] == "keys"
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert env["SLUICE_API_KEYS_FILE"].rsplit("/", 1)[0] in mounts
        assert env["SLUICE_TOKEN_SECRET_FILE"].rsplit("/", 1)[0] in mounts
        # What the edge makes of it (minus the files, which exist only on a deployment): authentication required.
        parsed = AuthSettings.from_reader(EnvReader({"SLUICE_AUTH": env["SLUICE_AUTH"], "SLUICE_API_KEYS_FILE": "/k"}))
        parsed.check_bind(env["SLUICE_HTTP_HOST"])  # does not refuse: credentials are required
        assert parsed.required
