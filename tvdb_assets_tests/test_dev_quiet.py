"""`tvdb dev` keeps the terminal for what needs a look: no beta notices, no sensor skip every
10 s, no DEBUG line per run event, no warning about a stray instance file; the UI keeps it all.
"""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from tvdb_assets import cli, dagster_env

ROOT = Path(cli.__file__).resolve().parent.parent  # where `make dev` starts `dagster dev`

LOAD_DEFINITIONS = """
import warnings

import dagster as dg

warnings.simplefilter("error", dg.BetaWarning)
warnings.simplefilter("error", dg.PreviewWarning)
import tvdb_assets.definitions  # a beta or preview notice we did not opt into raises here

dg.AssetCheckSpec("check", asset="uploads", partitions_def=dg.StaticPartitionsDefinition(["a"]))
try:

    @dg.asset(resource_defs={})  # another beta API: still heard
    def other(): ...

except dg.BetaWarning as warning:
    print(warning)
"""


def test_only_the_beta_apis_we_opt_into_are_quiet() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_DEFINITIONS], capture_output=True, text=True, timeout=120
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.startswith("Parameter `resource_defs` of function `asset`")


def test_no_instance_file_where_dagster_dev_looks_for_one() -> None:
    assert not (ROOT / "dagster.yaml").exists() and not (ROOT / "dagster.yml").exists()
    assert dagster_env.INSTANCE_TEMPLATE.is_file()
    assert dagster_env.INSTANCE_TEMPLATE.name not in ("dagster.yaml", "dagster.yml")


def test_dagster_dev_logs_warnings_of_its_webserver_and_daemon() -> None:
    # Dagster 1.13's own `dagster dev` command reads the arguments `tvdb dev` passes.
    from dagster._cli.dev import dev_command

    command, env = cli.dev_command("127.0.0.1", 3000)
    assert command[1] == "dev"
    params = dev_command.make_context("dev", command[2:]).params
    assert params["log_level"] == "warning"
    assert params["code_server_log_level"] == "warning"
    # Its advice to use `dg dev` is quiet; other FutureWarnings are not.
    notices = subprocess.run(
        [
            sys.executable,
            "-c",
            "import warnings; from dagster_shared.utils.warnings import supersession_warning; "
            "supersession_warning('Function `dev_command`', \"Use 'dg dev' instead.\"); "
            "warnings.warn('another notice', FutureWarning)",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    ).stderr
    assert "dev_command" not in notices and "another notice" in notices


@dg.asset
def note(context: dg.AssetExecutionContext) -> None:
    context.log.info("a line for the terminal")


def test_a_run_prints_info_while_its_log_keeps_every_event(
    instance: dg.DagsterInstance, capsys
) -> None:
    result = dg.materialize([note], instance=instance)  # on the instance the template wrote
    terminal = capsys.readouterr().err
    assert "a line for the terminal" in terminal
    assert " - DEBUG - " not in terminal  # STEP_START and its like, one line per event
    events = {e.dagster_event_type for e in instance.all_logs(result.run_id)}
    assert {
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.RUN_SUCCESS,
    } <= events
