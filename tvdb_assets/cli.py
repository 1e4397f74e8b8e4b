"""`tvdb`: ingest documents, search them, and see the pipeline's state."""

import argparse
import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, redirect_stderr
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # the CLI imports its heavy parts only when a command needs them
    import dagster as dg

    from tvdb_assets.lib import intake
    from tvdb_assets.lib.settings import Mode

Progress = Callable[[int, int], None]
Notice = Callable[[str], None]

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def _progress(done: int, total: int, terminal: TextIO) -> None:
    width = 30
    filled = width * done // total if total else width
    terminal.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} documents")
    if done >= total:
        terminal.write("\n")
    terminal.flush()


def _modes(args: argparse.Namespace) -> tuple["Mode", "Mode"]:
    from tvdb_assets.lib import settings

    # argparse's `choices` are the modes: a given one is a Mode.
    parser = args.parser_mode or settings.mode_from_env("TVDB_PARSER_MODE")
    embedder = args.embedder_mode or settings.mode_from_env("TVDB_EMBEDDER_MODE")
    return parser, embedder


def cmd_dry_run(args: argparse.Namespace) -> int:
    from tvdb_assets.lib import settings, store
    from tvdb_assets.lib.costs import budget, estimate
    from tvdb_assets.lib.ids import shown_path
    from tvdb_assets.lib.intake import bucket_objects, inbox_targets

    parser_mode, embedder_mode = _modes(args)
    files: list[tuple[str, Callable[[], bytes]]]
    if args.paths and args.paths[0].startswith("s3://"):
        uploads, _, objects = bucket_objects(args.paths)
        readable = [i.path for i in objects if i.refused is None]
        files = [(shown_path(path), partial(uploads.read, path)) for path in readable]
    else:
        inbox = settings.uploads_dir()
        files = [
            (shown_path(dest.relative_to(inbox).as_posix()), src.read_bytes)
            for src, dest in inbox_targets([Path(p) for p in args.paths], inbox).pairs
        ]
    plan = estimate.Plan.for_modes(parser_mode, embedder_mode)
    with store.connect() as conn:
        table, totals = estimate.estimate(conn, files, plan, budget.from_env())
    print(table.to_string(index=False) if len(table) else "no files")
    print()
    for name, value in totals.items():
        print(f"{name}: {value}")
    return 0 if totals["fits_budget"] == "yes" else 1


def cmd_ingest(args: argparse.Namespace) -> int:
    buckets = [p for p in args.paths if p.startswith("s3://")]
    if buckets and len(buckets) < len(args.paths):
        print("tvdb ingest: give s3:// URLs or local paths, not both", file=sys.stderr)
        return 2
    if args.dry_run:
        return cmd_dry_run(args)
    from tvdb_assets import dagster_env
    from tvdb_assets.lib import intake, workers

    if not buckets and intake.would_copy([Path(p) for p in args.paths]):
        # A file to copy into the inbox is work to do: the workers' fork server boots
        # (imports, the tokenizer) beside the database's start-up and Dagster's storage.
        workers.start()
    dagster_env.prepare()
    # Local files are copied into the inbox; objects in the bucket are read where they
    # are, by the runs, as the sensor's runs read them.
    taken = (
        intake.take_in_bucket(buckets) if buckets else intake.take_in([Path(p) for p in args.paths])
    )
    if not taken.has_work:  # everything stored already: no run, no need to load Dagster at all
        return _report(intake.summarize(taken, [], []))
    if taken.wanted:
        workers.start()  # unless started already
        _head_start(args, taken)
    return _report(_run(args, taken))


def _head_start(args: argparse.Namespace, taken: "intake.Intake") -> None:
    """While Dagster loads and creates the first run, the workers parse, chunk and embed
    what that run will ask for: the first batch of the files taken in, in the order the
    runner lays them out. Should another process claim some of them first, their results
    go unused."""
    from tvdb_assets.lib import clients, settings, stages

    parser_mode, embedder_mode = _modes(args)
    head_start = stages.HeadStart.for_ingest(
        clients.ParserSettings(mode=parser_mode), clients.EmbedderSettings(mode=embedder_mode)
    )
    if head_start is not None:
        head_start.begin(taken.wanted[: args.batch_size or settings.batch_size()])


def _run(args: argparse.Namespace, taken: "intake.Intake") -> "intake.IngestSummary":
    from tvdb_assets import runner

    with _dagster() as (instance, defs, progress, notice):
        return runner.run(
            taken, instance, defs, args.batch_size, progress, _run_config(args), notice
        )


@contextmanager
def _dagster() -> Iterator[tuple["dg.DagsterInstance", "dg.Definitions", Progress, Notice]]:
    """The Dagster instance and definitions a command's runs go through, with a progress
    bar and notices for the terminal."""
    from tvdb_assets import dagster_env
    from tvdb_assets.definitions import build_defs

    progress, notice = _reporters()
    # Dagster writes some failures (such as an event it could not store, with its SQL and
    # parameters) straight to stderr: they belong in the log file, not on the terminal.
    with dagster_env.instance() as instance, redirect_stderr(_LogStream()):
        # Built now: the resources read which keys the environment holds as it is now.
        yield instance, build_defs(), progress, notice


def _run_config(args: argparse.Namespace) -> dict:
    """The modes asked for, and the deployment's chunker and model as they are set now."""
    from tvdb_assets.defs.runs import rerun_config

    return {
        **rerun_config(*_modes(args)),
        # The progress bar and summary say what a user needs, failures included; the full
        # run logs are in the Dagster UI.
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }


def _reporters() -> tuple[Progress, Notice]:
    """A progress bar and notices on the terminal as it is now: while runs go, stderr
    is redirected to the log file (`_LogStream`)."""
    terminal = sys.stderr

    def progress(done: int, total: int) -> None:
        _progress(done, total, terminal)

    def notice(message: str) -> None:
        terminal.write(f"\n{message}\n")
        terminal.flush()

    return progress, notice


def cmd_backfill(args: argparse.Namespace) -> int:
    from tvdb_assets import backfill, dagster_env

    dagster_env.prepare()
    parser_mode, embedder_mode = _modes(args)
    plan = backfill.plan(args.reason, parser_mode, embedder_mode)
    print(plan.describe(), flush=True)
    if not plan.files:
        return 0
    if plan.paid and not args.yes:
        if not sys.stdin.isatty():
            print("not started: it may cost money; run it again with --yes to confirm")
            return 1
        answer = input(f"run {len(plan.files)} document(s) again? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not started")
            return 1
    from tvdb_assets import runner

    with _dagster() as (instance, defs, progress, notice):
        summary = runner.rerun(
            plan.files,
            f"backfill --{args.reason}",
            instance,
            defs,
            args.batch_size,
            progress,
            _run_config(args),
            notice,
        )
    print(
        f"{summary.documents} document(s) run again: {summary.stored} stored, "
        f"{len(summary.errors)} failed; {len(summary.runs)} run(s)"
    )
    for error in summary.errors:
        print(f"failed: {error.path}: {error.reason}")
    for run_id in summary.failed_runs:
        print(f"run failed: {run_id} (see the Dagster UI or `dagster run` logs)")
    if summary.interrupted:
        print("interrupted: run `tvdb backfill` again to finish")
        return 130
    return 0 if not (summary.errors or summary.failed_runs) else 1


class _LogStream(io.TextIOBase):
    def write(self, text: str) -> int:
        if text.strip():
            logging.getLogger("tvdb_assets.stderr").warning(text.rstrip())
        return len(text)


def _report(summary: "intake.IngestSummary") -> int:
    rate = summary.ingested / summary.seconds if summary.seconds else 0.0
    resumed = f"{summary.resumed} unfinished, " if summary.resumed else ""
    skipped = f"; {len(summary.skipped)} skipped" if summary.skipped else ""
    print(
        f"{summary.files} files: {summary.new} new, {summary.changed} changed, {resumed}"
        f"{summary.unchanged} unchanged; {summary.ingested} ingested into {summary.chunks} "
        f"chunks ({summary.tokens} tokens) in {summary.seconds:.1f} s ({rate:.1f} docs/s), "
        f"{len(summary.runs)} run(s){skipped}"
    )
    for path, reason in summary.skipped:
        print(f"skipped: {path}: {reason}")
    for error in summary.errors:
        print(f"failed: {error.path}: {error.reason}")
    for run_id in summary.failed_runs:
        print(f"run failed: {run_id} (see the Dagster UI or `dagster run` logs)")
    if summary.unfinished:
        print(
            f"not ingested: {len(summary.unfinished)} document(s); "
            "run `tvdb ingest` again to finish them"
        )
        for path in summary.unfinished[:20]:
            print(f"  {path}")
        if len(summary.unfinished) > 20:
            print(f"  ... and {len(summary.unfinished) - 20} more")
    if summary.interrupted:
        print("interrupted")
        return 130
    return 1 if summary.errors or summary.failed_runs or summary.unfinished else 0


def cmd_search(args: argparse.Namespace) -> int:
    from tvdb_assets.lib import clients, settings
    from tvdb_assets.lib.errors import TvdbError
    from tvdb_assets.lib.search import search, upload_links

    # Outside a Dagster run the key is read from the environment here, not through EnvVar.
    config = clients.EmbedderSettings(
        mode=args.embedder_mode or settings.mode_from_env("TVDB_EMBEDDER_MODE"),
        api_key=settings.secret("OPENAI_API_KEY"),
    )
    if config.mode == "real" and not config.api_key:
        print("tvdb search: embedder mode 'real' needs OPENAI_API_KEY", file=sys.stderr)
        return 2
    embedder = clients.embedder(config)
    try:
        hits = search(args.query, args.k, embedder)
    finally:
        embedder.close()
    try:
        links = upload_links(hits)
    except TvdbError as exc:  # the results stand without their links
        print(f"tvdb search: no links to the uploads: {exc}", file=sys.stderr)
        links = {}
    for hit in hits:
        result = {
            "score": round(hit.score, 4),
            "document": hit.document,
            "heading_path": list(hit.heading_path),
            "pages": [hit.page_start, hit.page_end] if hit.page_start else None,
            "text": hit.text[: args.snippet],
        }
        if hit.partition_key in links:
            result["link"] = links[hit.partition_key]
        print(json.dumps(result, ensure_ascii=False))
    return 0


def cmd_url(args: argparse.Namespace) -> int:
    """Print a time-limited link to a document's original upload (uploads in a bucket)."""
    from tvdb_assets.lib import clients, store
    from tvdb_assets.lib.uploads import links

    uploads = clients.upload_store()
    if not uploads.gives_links:
        print(
            f"tvdb url: uploads are in a local folder ({uploads.describe()}), which has no "
            "links; links need TVDB_UPLOADS_MODE=real and a bucket",
            file=sys.stderr,
        )
        return 2
    with store.connect() as conn:
        found = links.find(conn, uploads, args.document)
    if found is None:
        print(
            f"tvdb url: no upload {args.document!r}: give a partition key or a path in "
            f"{uploads.describe()}",
            file=sys.stderr,
        )
        return 1
    print(uploads.link(found.path, args.expires))
    return 0


def _seconds_of_a_link(text: str) -> int:
    from tvdb_assets.lib.uploads.s3 import MAX_LINK_SECONDS

    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1 <= seconds <= MAX_LINK_SECONDS:
        raise argparse.ArgumentTypeError(f"from 1 to {MAX_LINK_SECONDS} seconds (7 days)")
    return seconds


def cmd_status(args: argparse.Namespace) -> int:
    from tvdb_assets.lib import status
    from tvdb_assets.lib.costs import budget

    print(status.render(budget.from_env()))
    return 0


def dev_command(host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """`dagster dev` as `tvdb dev` starts it, and its environment: the terminal shows
    warnings and errors of the webserver and the daemon (their INFO lines, such as a sensor
    skip every 10 s, are in the UI) and the runs' INFO lines."""
    command = [
        str(Path(sys.executable).with_name("dagster")), "dev",
        "-h", host, "-p", str(port), "-m", "tvdb_assets.definitions",
        "--log-level", "warning",
    ]  # fmt: skip
    # We start `dagster dev` on purpose; its advice to move to `dg dev` is no news here.
    quiet = "ignore:Function `dev_command` is superseded:FutureWarning"
    filters = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), quiet]))
    return command, {**os.environ, "PYTHONWARNINGS": filters}


def cmd_dev(args: argparse.Namespace) -> int:
    """Start `dagster dev` on the embedded database, with the samples in the inbox."""
    from tvdb_assets import dagster_env
    from tvdb_assets.lib import settings
    from tvdb_assets.lib.intake import copy_into_inbox

    dagster_env.prepare()
    inbox = settings.uploads_dir()
    inbox.mkdir(parents=True, exist_ok=True)
    if SAMPLES.is_dir():
        copy_into_inbox([SAMPLES], inbox)
    command, env = dev_command(args.host, args.port)
    print(f"inbox: {inbox}\nUI: http://{args.host}:{args.port}", flush=True)

    def default_sigint() -> None:
        # A process started in the background by a script ignores SIGINT; dagster dev needs
        # it to shut down its webserver and daemon cleanly.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    child = subprocess.Popen(command, preexec_fn=default_sigint, env=env)

    def stop_child(signum: int, frame: object) -> None:
        # dagster dev shuts its webserver and daemon down cleanly on SIGINT (and treats
        # SIGTERM the same); pass either on, then wait for it to finish.
        child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, stop_child)
    signal.signal(signal.SIGTERM, stop_child)
    return child.wait()


def cmd_webhook_serve(args: argparse.Namespace) -> int:
    """Receive signed upload notices and LlamaParse job events until SIGINT or SIGTERM."""
    from tvdb_assets.lib import database, settings, store
    from tvdb_assets.lib.store import webhook_events
    from tvdb_assets.lib.webhooks import receiver, signatures

    secret, llama_secret = settings.webhook_secret(), settings.llama_webhook_secret()
    problem = signatures.weak_secret("TVDB_WEBHOOK_SECRET", secret)
    if problem is None and llama_secret is not None:
        problem = signatures.weak_secret("TVDB_LLAMA_WEBHOOK_SECRET", llama_secret)
    if problem is not None or secret is None:
        print(f"tvdb webhook serve: {problem}; no delivery is taken unsigned", file=sys.stderr)
        return 2
    url = database.database_url()
    # The database answers, its schema is migrated, and what was acted upon long ago goes.
    with store.connect(url) as conn:
        webhook_events.prune(conn, receiver.KEEP_CONSUMED_DAYS)
    try:
        sock = receiver.bind(args.host, args.port)
    except OSError as exc:
        print(
            f"tvdb webhook serve: cannot listen on {args.host}:{args.port} ({exc.strerror})",
            file=sys.stderr,
        )
        return 2
    host, port = sock.getsockname()[:2]
    llama = receiver.LLAMAPARSE_PATH if llama_secret else "off (TVDB_LLAMA_WEBHOOK_SECRET unset)"
    print(
        f"receiving on http://{host}:{port}: upload notices at {receiver.UPLOADS_PATH}, "
        f"LlamaParse events at {llama}",
        flush=True,
    )
    receiver.serve(sock, receiver.Secrets(secret, llama_secret), url)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvdb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser(
        "ingest", help="copy files into the inbox (or list a bucket) and ingest them now"
    )
    ingest.add_argument(
        "paths",
        nargs="+",
        help="files or directories, or s3://bucket/prefix URLs in the uploads bucket (read "
        "where they are)",
    )
    ingest.add_argument("--batch-size", type=int, default=None, help="documents per run")
    ingest.add_argument(
        "--dry-run",
        action="store_true",
        help="print documents, pages, tokens and estimated cost; call no API, change nothing",
    )
    modes = ("mock", "real", "hybrid")
    ingest.add_argument("--parser-mode", choices=modes, help="default: TVDB_PARSER_MODE")
    ingest.add_argument("--embedder-mode", choices=modes, help="default: TVDB_EMBEDDER_MODE")
    ingest.set_defaults(func=cmd_ingest)

    backfill = sub.add_parser(
        "backfill", help="run stored documents again: failed, fallbacks, stale or all"
    )
    which = backfill.add_mutually_exclusive_group(required=True)
    for reason, meaning in (
        ("failed", "documents that failed for a passing cause (a service, the budget)"),
        ("fallbacks", "documents holding hybrid mode's stand-in parses or vectors"),
        ("stale", "documents built with other chunker settings or model, or half rebuilt"),
        ("all", "every document in the inbox"),
    ):
        which.add_argument(
            f"--{reason}", dest="reason", action="store_const", const=reason, help=meaning
        )
    backfill.add_argument("--yes", action="store_true", help="start without asking")
    backfill.add_argument("--batch-size", type=int, default=None, help="documents per run")
    backfill.add_argument("--parser-mode", choices=modes, help="default: TVDB_PARSER_MODE")
    backfill.add_argument("--embedder-mode", choices=modes, help="default: TVDB_EMBEDDER_MODE")
    backfill.set_defaults(func=cmd_backfill)

    search = sub.add_parser("search", help="semantic search; prints JSON lines")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="number of results")
    search.add_argument("--snippet", type=int, default=300, help="characters of text shown")
    search.add_argument(
        "--embedder-mode", choices=modes, help="embed the query as documents were embedded"
    )
    search.set_defaults(func=cmd_search)

    url = sub.add_parser("url", help="print a time-limited link to a document's upload")
    url.add_argument("document", help="a partition key, or the upload's path in the bucket")
    url.add_argument(
        "--expires",
        type=_seconds_of_a_link,
        default=3600,
        help="seconds the link works (default 3600; at most 7 days)",
    )
    url.set_defaults(func=cmd_url)

    status = sub.add_parser("status", help="counts per table and open ingest errors")
    status.set_defaults(func=cmd_status)

    dev = sub.add_parser("dev", help="run dagster dev on the embedded database (make dev)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(func=cmd_dev)

    webhook = sub.add_parser("webhook", help="receive signed webhook deliveries")
    webhook_commands = webhook.add_subparsers(dest="webhook_command", required=True)
    serve = webhook_commands.add_parser(
        "serve", help="an HTTP receiver for signed upload notices and LlamaParse job events"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="0: any free port")
    serve.set_defaults(func=cmd_webhook_serve)
    return parser


@contextmanager
def _log_to_file() -> Iterator[Path]:
    """Library log records (retries, cancelled queries, lost connections) go to a file.

    The terminal gets the progress bar, the summary and one line per problem. With
    TVDB_LOG_FORMAT=json the records are JSON lines, on stderr too, and so is every line the
    command writes to stderr (its progress and notices): a log shipper reads stderr whole.
    """
    from tvdb_assets.lib import logs, settings

    path = settings.home_dir() / "logs" / "tvdb.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    json_lines = settings.log_format() == "json"
    handler.setFormatter(
        logs.JsonLines()
        if json_lines
        else logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    )
    handler.addFilter(logs.Masking())
    handlers: list[logging.Handler] = [handler]
    terminal = logs.TerminalLines("tvdb_assets.cli") if json_lines else None
    if terminal:
        handlers.append(logs.JsonLinesHandler(sys.stderr))
    logs.install()
    root = logging.getLogger()
    level = root.level
    for each in handlers:
        root.addHandler(each)
    root.setLevel(logging.INFO)
    try:
        with redirect_stderr(terminal) if terminal else nullcontext():
            yield path
    finally:
        if terminal:
            terminal.flush()
        for each in handlers:
            root.removeHandler(each)
            each.close()
        root.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "dev":
        return int(args.func(args))
    with _log_to_file() as log:
        try:
            return int(args.func(args))
        except Exception as exc:
            from tvdb_assets.lib import database, errors

            if isinstance(exc, errors.TvdbError) and not isinstance(exc, errors.DatabaseLost):
                # A service down, a budget spent: one line, already redacted of secrets.
                print(f"tvdb {args.command}: {exc}", file=sys.stderr)
                return 2
            if not errors.is_lost_database(exc):
                raise
            logging.getLogger("tvdb_assets.cli").error("database lost", exc_info=exc)
            lost = exc if isinstance(exc, errors.DatabaseLost) else None
            message = str(lost or errors.DatabaseLost(database.location()))
            sys.stderr.write("\n")  # end the progress bar's line
            print(f"{message}; re-run `tvdb {args.command}` to resume (details in {log})")
            return 3


if __name__ == "__main__":
    sys.exit(main())
