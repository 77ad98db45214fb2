"""`dlaas`: FfDL's command-line verbs over the Trainer client.

Output is for shells: results on stdout (a training id, a table, one record per
line), diagnostics on stderr as ``dlaas: error: ...``, and exit codes that tell
a script what went wrong (listed in ``dlaas --help``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from google.protobuf import json_format

from dlaas_jupyter import __version__
from dlaas_jupyter.client import TrainerClient, TrainerConfig
from dlaas_jupyter.client.config import URL_ENV, USER_ENV
from dlaas_jupyter.client.errors import (
    AuthenticationFailed,
    DlaasError,
    InvalidRequest,
    JobNotFound,
    PermissionDenied,
    TrainerUnavailable,
)
from dlaas_jupyter.formatting import (
    describe_error,
    framework_label,
    local_time,
    print_table,
    status_name,
)
from dlaas_jupyter.job import JobTable
from dlaas_jupyter.packaging.archive import ArchiveError, read_zip_or_folder
from dlaas_jupyter.packaging.manifest import ManifestError, load_manifest, manifest_to_request
from dlaas_jupyter.proto import trainer_pb2 as pb

__all__ = ["EXIT_CODES", "build_parser", "exit_code_for", "main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_DENIED = 4
EXIT_UNREACHABLE = 5
EXIT_INVALID = 6
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `cat` cut off by `head`

EXIT_CODES: Mapping[int, str] = {
    EXIT_OK: "success",
    EXIT_ERROR: "error from the Trainer or local I/O; with --follow: job ended FAILED or HALTED",
    EXIT_USAGE: "usage or configuration error (bad arguments or DLAAS_* variables)",
    EXIT_NOT_FOUND: "training job not found",
    EXIT_DENIED: "permission denied, or the Trainer refused the token",
    EXIT_UNREACHABLE: "Trainer unreachable",
    EXIT_INVALID: "invalid request: bad manifest or model definition, or rejected by the Trainer",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_BROKEN_PIPE: "output closed early (e.g. piped into head)",
}

# Most specific first: the first matching class decides the exit code.
_ERROR_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (JobNotFound, EXIT_NOT_FOUND),
    (PermissionDenied, EXIT_DENIED),
    (AuthenticationFailed, EXIT_DENIED),
    (TrainerUnavailable, EXIT_UNREACHABLE),
    (InvalidRequest, EXIT_INVALID),
    (ManifestError, EXIT_INVALID),
    (ArchiveError, EXIT_INVALID),
    (DlaasError, EXIT_ERROR),
    (OSError, EXIT_ERROR),
)

_PAGE = 1000  # records per query when printing a whole log
_TERMINAL_FAILURES = (pb.FAILED, pb.HALTED)
_NO_ERROR_CODES = ("", "0", "000")  # what FfDL sets when nothing went wrong

Record = TypeVar("Record", pb.LogLine, pb.EMetrics)


class _JobDidNotComplete(Exception):
    """A followed job ended FAILED or HALTED."""


def exit_code_for(error: BaseException) -> int:
    """The documented exit code for an error raised while running a command."""
    for kind, code in _ERROR_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run one `dlaas` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "follow", False) and (args.pagesize is not None or args.pos < 0):
        return _fail("--follow cannot be combined with --pagesize or a negative --pos", EXIT_USAGE)
    try:
        code = _run(args)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        handler: Callable[[argparse.Namespace, TrainerConfig], int] = args.handler
        return handler(args, config)
    except _JobDidNotComplete as exc:
        return _fail(str(exc), EXIT_ERROR)
    except tuple(kind for kind, _ in _ERROR_CODES) as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        return _fail(describe_error(exc), exit_code_for(exc))


def _config(args: argparse.Namespace) -> TrainerConfig:
    """Resolve the Trainer configuration, letting --url and --user override the environment."""
    environ = dict(os.environ)
    if args.url is not None:
        environ[URL_ENV] = args.url
    if args.user is not None:
        environ[USER_ENV] = args.user
    return TrainerConfig.resolve(environ=environ)


def _fail(message: str, code: int) -> int:
    print(f"dlaas: error: {message}", file=sys.stderr)
    return code


def _discard_stdout() -> None:
    """Point stdout at /dev/null so flushing it at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


# --- commands ---------------------------------------------------------------


def _train(args: argparse.Namespace, config: TrainerConfig) -> int:
    # Check everything local before connecting (which may start the embedded Trainer).
    manifest = load_manifest(Path(args.manifest))
    model_zip = read_zip_or_folder(Path(args.model))
    request = manifest_to_request(manifest, model_zip, user_id=config.user)
    with TrainerClient(config) as client:
        training_id = client.create(request)
    print(training_id)
    print(f"Follow it with: dlaas logs {training_id} --follow", file=sys.stderr)
    return EXIT_OK


def _list(args: argparse.Namespace, config: TrainerConfig) -> int:
    with TrainerClient(config) as client:
        table = JobTable(client.list())
    print_table(JobTable.HEADER, table.rows)
    return EXIT_OK


def _show(args: argparse.Namespace, config: TrainerConfig) -> int:
    with TrainerClient(config) as client:
        job = client.get(args.training_id)
    job.model_definition.ClearField("content")
    if args.json:
        print(json_format.MessageToJson(job, preserving_proto_field_name=True, ensure_ascii=False))
    else:
        _print_job(job)
    return EXIT_OK


def _halt(args: argparse.Namespace, config: TrainerConfig) -> int:
    with TrainerClient(config) as client:
        response = client.halt(args.training_id)
    print(f"{args.training_id}: {status_name(response.status)}")
    return EXIT_OK


def _delete(args: argparse.Namespace, config: TrainerConfig) -> int:
    with TrainerClient(config) as client:
        client.delete(args.training_id)
    print(f"Deleted {args.training_id}")
    return EXIT_OK


def _download(args: argparse.Namespace, config: TrainerConfig) -> int:
    what = "definition" if args.definition else "trainedmodel"
    dest = Path(args.filename or f"{args.training_id}-{what}.zip")
    with TrainerClient(config) as client:
        if args.definition:
            path = client.download_definition(args.training_id, dest)
        else:
            path = client.download_trained_model(args.training_id, dest)
    print(path)
    return EXIT_OK


def _logs(args: argparse.Namespace, config: TrainerConfig) -> int:
    with TrainerClient(config) as client:
        records = _records(args, client.logs, client.follow_logs)
        for record in records:
            _emit(record.line.rstrip("\n"), args.follow)
        if args.follow:
            _check_outcome(client, args.training_id)
    return EXIT_OK


def _emetrics(args: argparse.Namespace, config: TrainerConfig) -> int:
    with TrainerClient(config) as client:
        records = _records(args, client.emetrics, client.follow_emetrics)
        for record in records:
            _emit(_metrics_line(record, as_json=args.json), args.follow)
        if args.follow:
            _check_outcome(client, args.training_id)
    return EXIT_OK


def _versions(args: argparse.Namespace, config: TrainerConfig) -> int:
    with TrainerClient(config) as client:
        frameworks = client.versions()
    rows = [
        (name, ", ".join(detail.version for detail in details))
        for name, details in sorted(frameworks.items())
    ]
    print_table(("FRAMEWORK", "VERSIONS"), rows)
    return EXIT_OK


# --- logs and metrics selection ---------------------------------------------


def _records(
    args: argparse.Namespace,
    page: Callable[..., list[Record]],
    follow: Callable[[str], Iterable[Record]],
) -> Iterator[Record]:
    """The records a logs/emetrics command prints, following the Trainer's Query rules.

    --pagesize or a negative --pos: one page, exactly as the Trainer answers it.
    Otherwise every record from --pos (a line number, default the first) with a
    time at or after --since; with --follow, live until the job ends.
    """
    training_id = args.training_id
    since = args.since or 0
    if args.follow:
        for record in follow(training_id):
            if record.meta.rindex >= args.pos and record.meta.time >= since:
                yield record
        return
    if args.pagesize is not None or args.pos < 0:
        since_text = str(args.since) if args.since is not None else ""
        yield from page(training_id, pos=args.pos, pagesize=args.pagesize or 0, since=since_text)
        return
    pos = max(args.pos, 1)
    while True:
        records = page(training_id, pos=pos, pagesize=_PAGE)
        if not records:
            return
        yield from (record for record in records if record.meta.time >= since)
        pos += _PAGE


def _check_outcome(client: TrainerClient, training_id: str) -> None:
    """After following a job to its end: raise unless it COMPLETED."""
    status = client.get(training_id).status
    if status.status in _TERMINAL_FAILURES:
        code = "" if status.error_code in _NO_ERROR_CODES else status.error_code
        detail = "; ".join(part for part in (code, status.status_message) if part)
        name = status_name(status.status)
        raise _JobDidNotComplete(
            f"training job {training_id} ended {name}" + (f" ({detail})" if detail else "")
        )


def _emit(text: str, live: bool) -> None:
    # Flush each record while following so `| grep` and friends see it at once.
    print(text, flush=live)


def _metrics_line(record: pb.EMetrics, *, as_json: bool) -> str:
    if as_json:
        return json_format.MessageToJson(
            record, preserving_proto_field_name=True, indent=None, ensure_ascii=False
        )

    def pairs(values: Mapping[str, pb.Any]) -> str:
        return " ".join(f"{key}={values[key].value}" for key in sorted(values))

    return "\t".join((record.grouplabel, pairs(record.etimes), pairs(record.values)))


# --- formatting -------------------------------------------------------------


def _size(amount: float, unit: pb.SizeUnit.ValueType) -> str:
    name = pb.SizeUnit.Name(unit) if unit in pb.SizeUnit.values() else f"unit {unit}"
    return f"{amount:g} {name}"


def _print_job(job: pb.Job) -> None:
    status = job.status
    resources = job.training.resources
    datastores = [
        " ".join(
            [f"{store.id} ({store.type})"]
            + [f"{key}={value}" for key, value in sorted(store.fields.items()) if value]
        )
        for store in job.datastores
    ]
    resource_parts = [
        f"cpus {resources.cpus:g}" if resources.cpus else "",
        f"gpus {resources.gpus:g}" if resources.gpus else "",
        resources.gpu_type,
        f"memory {_size(resources.memory, resources.memory_unit)}" if resources.memory else "",
        f"storage {_size(resources.storage, resources.storage_unit)}" if resources.storage else "",
        f"learners {resources.learners}" if resources.learners else "",
    ]
    fields = [
        ("ID", job.training_id),
        ("Name", job.model_definition.name),
        ("Description", job.model_definition.description),
        ("Framework", framework_label(job.model_definition.framework)),
        ("Command", job.training.command),
        ("Resources", ", ".join(part for part in resource_parts if part)),
        ("Datastores", "; ".join(datastores)),
        ("Status", status_name(status.status)),
        ("Message", status.status_message),
        ("Error code", "" if status.error_code in _NO_ERROR_CODES else status.error_code),
        ("Submitted", local_time(status.submission_timestamp)),
        ("Downloading", local_time(status.download_start_timestamp)),
        ("Processing", local_time(status.process_start_timestamp)),
        ("Storing", local_time(status.store_start_timestamp)),
        ("Completed", local_time(status.completion_timestamp)),
    ]
    width = max(len(label) for label, _ in fields) + 1
    for label, value in fields:
        if value:
            print(f"{label + ':':<{width}} {value}")


# --- argument parsing -------------------------------------------------------


def _epilog(*, environment: bool) -> str:
    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    if not environment:
        return f"exit status:\n{codes}"
    return (
        f"exit status:\n{codes}\n\n"
        "where the Trainer is (environment):\n"
        f"  {URL_ENV}  grpc://host:port or grpcs://host:port; unset: the embedded\n"
        "      Trainer of DLAAS_DATA_DIR, started on demand\n"
        "  DLAAS_TRAINER_TOKEN, DLAAS_TRAINER_CA, DLAAS_TRAINER_SERVER_NAME: credentials, TLS\n"
        f"  {USER_ENV}  the user id (else JUPYTERHUB_USER, else the login name)\n"
        f"  --url and --user override {URL_ENV} and {USER_ENV}."
    )


def _whole_number(text: str, minimum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if minimum is not None and value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
    return value


def _nonnegative(text: str) -> int:
    return _whole_number(text, 0)


def _positive(text: str) -> int:
    return _whole_number(text, 1)


def _add_query_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("training_id", metavar="ID")
    parser.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help=f"keep printing {what} as the job writes them, until it ends "
        "(exit 1 if it ends FAILED or HALTED)",
    )
    parser.add_argument(
        "-s",
        "--pagesize",
        type=_positive,
        metavar="N",
        help="print one page of N records, as the Trainer pages them (default: all records)",
    )
    parser.add_argument(
        "-p",
        "--pos",
        type=_whole_number,
        default=0,
        metavar="N",
        help="start at record number N (1 is the first); negative: the last page, counted "
        "from the end",
    )
    parser.add_argument(
        "--since",
        type=_nonnegative,
        metavar="MS",
        help="only records at or after this time (milliseconds since the epoch)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `dlaas` argument parser, one subcommand per FfDL CLI verb."""
    parser = argparse.ArgumentParser(
        prog="dlaas",
        description="Train models on an FfDL Trainer, or the embedded one, from the shell.",
        epilog=_epilog(environment=True),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--url", help=f"Trainer URL, grpc://host:port (overrides {URL_ENV})")
    parser.add_argument("--user", help=f"user id (overrides {USER_ENV})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_epilog(environment=False),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(handler=handler)
        return sub

    train = command("train", _train, "submit a training job; prints its id")
    train.add_argument("manifest", metavar="MANIFEST", help="the FfDL manifest.yml")
    train.add_argument("model", metavar="ZIP|DIR", help="the model definition: a zip or a folder")

    command("list", _list, "list your training jobs")

    show = command("show", _show, "show one training job")
    show.add_argument("training_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="the job as JSON (without the zip)")

    command("halt", _halt, "stop a job, keeping what it wrote").add_argument(
        "training_id", metavar="ID"
    )
    command("delete", _delete, "delete a job with its logs and results").add_argument(
        "training_id", metavar="ID"
    )

    download = command("download", _download, "download a job's model definition or results")
    download.add_argument("training_id", metavar="ID")
    which = download.add_mutually_exclusive_group(required=True)
    which.add_argument("--definition", action="store_true", help="the submitted model definition")
    which.add_argument("--trainedmodel", action="store_true", help="the trained model (results)")
    download.add_argument(
        "--filename",
        metavar="F",
        help="where to save it (default ID-definition.zip or ID-trainedmodel.zip)",
    )

    logs = command("logs", _logs, "print a job's log lines")
    _add_query_options(logs, "lines")

    emetrics = command(
        "emetrics",
        _emetrics,
        "print a job's evaluation metrics, one record per "
        "line: group, etimes, values (tab-separated)",
    )
    _add_query_options(emetrics, "records")
    emetrics.add_argument("--json", action="store_true", help="one JSON object per record")

    command("versions", _versions, "list the frameworks and versions the Trainer offers")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
