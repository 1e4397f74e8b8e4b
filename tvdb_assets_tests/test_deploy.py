"""docker-compose.yml, the Dockerfile and deploy/workspace.yaml, checked without Docker:
what a user of `docker compose up` relies on (README "Deploying")."""

import importlib
import re
import shlex
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml

from tvdb_assets import cli, dagster_env
from tvdb_assets_tests.compose import (
    COMPOSE,
    DOCKERFILE,
    ROOT,
    SERVICES,
    command,
    environment,
    image_paths,
    interpolate,
    option,
    variables,
)

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
WORKSPACE = yaml.safe_load((ROOT / "deploy" / "workspace.yaml").read_text())
ENV_EXAMPLE = {
    line.split("=", 1)[0]
    for line in (ROOT / ".env.example").read_text().splitlines()
    if "=" in line and not line.startswith("#")
}

# The Compose specification's top-level and service keys (compose-spec, 2025).
TOP_LEVEL_KEYS = {"version", "name", "include", "services", "networks", "volumes", "configs",
                  "secrets", "models"}  # fmt: skip
SERVICE_KEYS = {
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup",
    "cgroup_parent", "command", "configs", "container_name", "cpu_count", "cpu_percent",
    "cpu_period", "cpu_quota", "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus",
    "cpuset", "credential_spec", "depends_on", "deploy", "develop", "device_cgroup_rules",
    "devices", "dns", "dns_opt", "dns_search", "domainname", "entrypoint", "env_file",
    "environment", "expose", "extends", "external_links", "extra_hosts", "gpus", "group_add",
    "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels", "label_file",
    "links", "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness",
    "memswap_limit", "models", "network_mode", "networks", "oom_kill_disable",
    "oom_score_adj", "pid", "pids_limit", "platform", "ports", "post_start", "pre_stop",
    "privileged", "profiles", "provider", "pull_policy", "read_only", "restart", "runtime",
    "scale", "secrets", "security_opt", "shm_size", "stdin_open", "stop_grace_period",
    "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits", "use_api_socket",
    "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
}  # fmt: skip
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval",
                    "disable"}  # fmt: skip
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def dependencies(service: str) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in SERVICES[service]["depends_on"].items()}


def click_command(argv: list[str]) -> tuple[click.Command, list[str]]:
    """The click command a console script runs for `argv`, and the arguments it parses."""
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == argv[0]]
    command: click.Command = importlib.import_module(script.value.split(":")[0]).cli
    args = argv[1:]
    while isinstance(command, click.Group):
        command, args = command.commands[args[0]], args[1:]
    return command, args


def test_the_file_is_compose_and_has_the_services() -> None:
    assert {key for key in COMPOSE if not key.startswith("x-")} <= TOP_LEVEL_KEYS
    assert {"postgres", "init", "code-server", "webserver", "daemon"} <= set(SERVICES)
    for name, service in SERVICES.items():
        assert set(service) <= SERVICE_KEYS, name
        assert set(service.get("healthcheck", {})) <= HEALTHCHECK_KEYS, name
        if "depends_on" in service:
            assert set(dependencies(name).values()) <= CONDITIONS, name
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source.startswith((".", "/")) or source in COMPOSE["volumes"], mount


def test_postgres_is_pinned_healthchecked_and_keeps_its_data() -> None:
    postgres = SERVICES["postgres"]
    repository, _, tag = postgres["image"].partition(":")
    assert repository == "pgvector/pgvector"
    assert re.fullmatch(r"\d+\.\d+\.\d+-pg\d+", tag), "a pgvector release and a Postgres major"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pgdata" in COMPOSE["volumes"]
    assert postgres["environment"]["POSTGRES_DB"] == "tvdb"


def test_services_start_in_order() -> None:
    assert dependencies("init") == {"postgres": "service_healthy"}
    assert dependencies("code-server") == {
        "postgres": "service_healthy",
        "init": "service_completed_successfully",
    }
    assert SERVICES["init"]["restart"] == "no"
    for service in ("webserver", "daemon"):
        assert dependencies(service) == {
            "postgres": "service_healthy",
            "code-server": "service_healthy",
        }


def test_init_prepares_the_databases_and_the_schema() -> None:
    shell = command("init")
    assert shell[:2] == ["sh", "-c"]
    steps = [shlex.split(step) for step in shell[2].split("&&")]
    assert steps[0] == [
        "python", "-c", "from tvdb_assets import dagster_env; dagster_env.prepare()"
    ]  # fmt: skip
    assert steps[1][0] == "tvdb"
    assert cli.build_parser().parse_args(steps[1][1:]).func is cli.cmd_status


def test_the_webserver_is_on_port_3000() -> None:
    assert option(command("webserver"), "-p", "--port") == "3000"
    assert [port.rsplit(":", 1)[-1] for port in SERVICES["webserver"]["ports"]] == ["3000"]


def test_the_workspace_names_the_code_server_as_compose_runs_it() -> None:
    (location,) = WORKSPACE["load_from"]
    grpc = location["grpc_server"]
    args = command("code-server")
    for service in ("webserver", "daemon"):
        env = SERVICES[service]["environment"]
        assert env[grpc["host"]["env"]] == "code-server"
        assert env[grpc["port"]["env"]] == option(args, "-p", "--port")
    assert option(args, "-h", "--host") == "0.0.0.0"
    assert grpc["location_name"] == option(args, "--location-name")
    assert option(args, "-m", "--module-name") == "tvdb_assets.definitions"
    health = SERVICES["code-server"]["healthcheck"]["test"]
    assert option(health, "-p", "--port") == option(args, "-p", "--port")
    # The webserver and the daemon read that file where the Dockerfile puts it.
    for service in ("webserver", "daemon"):
        path = option(command(service), "-w", "--workspace")
        assert image_paths()[path] == ROOT / "deploy" / "workspace.yaml"


@pytest.mark.parametrize("service", ["code-server", "webserver", "daemon"])
def test_commands_are_dagster_commands(service: str) -> None:
    argv = command(service)
    files = {str(path): str(local) for path, local in image_paths().items()}
    parsed, args = click_command([files.get(arg, arg) for arg in argv])
    parsed.make_context(argv[0], args)
    expected = {"code-server": "start", "webserver": "dagster-webserver", "daemon": "run"}
    assert parsed.name == expected[service]


def test_the_healthcheck_and_the_image_default_are_dagster_commands() -> None:
    health = SERVICES["code-server"]["healthcheck"]["test"]
    assert health[0] == "CMD"
    parsed, args = click_command(health[1:])
    parsed.make_context(health[1], args)
    (default,) = re.findall(r"^CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert yaml.safe_load(default) == command("code-server")


def test_runs_find_the_inbox() -> None:
    # No run launcher in the instance: Dagster's default launches each run through the code
    # location's gRPC server, as a process of the code-server container.
    instance = yaml.safe_load(dagster_env.INSTANCE_TEMPLATE.read_text())
    assert "run_launcher" not in instance
    code_server = SERVICES["code-server"]
    inbox = code_server["environment"]["TVDB_UPLOADS_DIR"]
    assert f"inbox:{inbox}" in code_server["volumes"]
    assert "inbox" in COMPOSE["volumes"]


def test_the_image_sets_the_dagster_environment() -> None:
    assert re.search(r"^FROM python:3\.11-slim$", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^RUN pip install \. ", DOCKERFILE, re.MULTILINE), "no dev extras"
    assert re.search(r"DAGSTER_HOME=/\S+", DOCKERFILE)
    assert 'cp tvdb_assets/dagster.template.yaml "$DAGSTER_HOME/dagster.yaml"' in DOCKERFILE
    for name, value in dagster_env.PERFORMANCE_ENV.items():
        assert f"{name}={value}" in DOCKERFILE


def test_no_secret_is_in_the_file() -> None:
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[^}]+\}", text), f"{name}: {key} is not from .env"
            if "://" in text:  # a URL's password is a variable's, whatever .env sets
                marked = interpolate(text, {var: f"<{var}>" for var in variables(text)})
                password = urlsplit(marked).password
                assert password is None or re.fullmatch(r"<\w+>", password), f"{name}: {key}"
    # Without a password in .env, compose refuses to start rather than use a default.
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        interpolate(SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"], {})
    # The keys reach the code server (where runs call the services) and nothing else.
    for name, service in SERVICES.items():
        holds = {key for key in service.get("environment") or {} if key.endswith("_API_KEY")}
        assert holds == ({"OPENAI_API_KEY", "LLAMA_CLOUD_API_KEY"} if name == "code-server"
                         else set()), name  # fmt: skip


def test_every_variable_is_in_the_env_example() -> None:
    used = variables(COMPOSE)
    assert {"POSTGRES_PASSWORD", "OPENAI_API_KEY"} <= used
    assert used <= ENV_EXAMPLE, used - ENV_EXAMPLE


def test_mock_mode_is_the_default() -> None:
    env = SERVICES["code-server"]["environment"]
    modes = ("TVDB_PARSER_MODE", "TVDB_EMBEDDER_MODE", "TVDB_UPLOADS_MODE")
    assert {interpolate(env[mode], {mode: ""}) for mode in modes} == {"mock"}
    url = interpolate(env["TVDB_DAGSTER_PG_URL"], {"POSTGRES_PASSWORD": "pw"})
    assert url == "postgresql+psycopg2://tvdb:pw@postgres:5432/dagster"


def test_the_kubernetes_instance_is_the_template_with_a_launcher_and_a_larger_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    source = ROOT / "deploy" / "k8s" / "dagster.yaml"
    (tmp_path / "dagster.yaml").write_text(source.read_text())
    monkeypatch.setenv("TVDB_DAGSTER_PG_URL", "postgresql+psycopg2://tvdb:pw@db:5432/dagster")
    # Dagster's own reading of an instance file: it raises on a key or value it refuses.
    instance, _ = dagster_instance_config(str(tmp_path))
    launcher = instance["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    checked = process_config(K8sRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors

    # Everything else is the template's, so the two cannot drift apart unseen.
    template = yaml.safe_load(dagster_env.INSTANCE_TEMPLATE.read_text())
    kubernetes = yaml.safe_load(source.read_text())
    assert set(kubernetes) == set(template) | {"run_launcher"}
    tuned = {"concurrency", "run_monitoring", "run_launcher"}
    assert {k: v for k, v in kubernetes.items() if k not in tuned} == {
        k: v for k, v in template.items() if k not in tuned
    }
    assert (
        kubernetes["concurrency"]["runs"]["max_concurrent_runs"]
        > (template["concurrency"]["runs"]["max_concurrent_runs"])
    )

    # Run pods find the instance, the inbox and the settings where the image and the
    # compose file put them.
    config = launcher["config"]
    assert f"DAGSTER_HOME={config['dagster_home']}" in DOCKERFILE
    [mount] = config["volume_mounts"]
    assert mount["mountPath"] == SERVICES["code-server"]["environment"]["TVDB_UPLOADS_DIR"]
    assert [v["name"] for v in config["volumes"]] == [mount["name"]]
    assert config["env_secrets"] and config["env_config_maps"]
    # No URL (they hold the database password) and no key: those are the Secret's.
    assert "://" not in yaml.safe_dump(kubernetes)
    assert not variables(kubernetes) and "env_vars" not in config


def test_the_webhook_receiver_is_an_opt_in_service_of_the_same_image() -> None:
    webhook = SERVICES["webhook"]
    assert webhook["profiles"] == ["webhook"]  # `docker compose up` alone leaves it out
    args = command("webhook")
    assert args[0] == "tvdb"
    assert cli.build_parser().parse_args(args[1:]).func is cli.cmd_webhook_serve
    port = option(args, "--port")
    assert webhook["ports"] == [f"127.0.0.1:{port}:{port}"]
    # Compose starts even with no secret set: the receiver itself refuses, in one line.
    dotenv = {"POSTGRES_PASSWORD": "pw"}
    env = environment("webhook", dotenv)
    assert env["TVDB_WEBHOOK_SECRET"] == ""
    # It records events in the pipeline's database, where the runs read them.
    assert env["TVDB_DATABASE_URL"] == environment("code-server", dotenv)["TVDB_DATABASE_URL"]
