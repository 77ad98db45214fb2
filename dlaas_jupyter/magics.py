"""The ``%dlaas_*`` IPython magics: train from a notebook as easily as running a cell.

Thin by design: each magic parses its arguments and calls the packaging, the
client, the Job object or the widgets. A mistake the user can fix (bad flag
value, unreadable manifest, unknown job, unreachable Trainer) prints one red
line, never a traceback, and the magic returns None.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from dlaas_jupyter.client import DlaasError, TrainerClient, TrainerConfig
from dlaas_jupyter.client.config import (
    CA_ENV,
    SERVER_NAME_ENV,
    TOKEN_ENV,
    URL_ENV,
    USER_ENV,
    validate_url,
)
from dlaas_jupyter.formatting import describe_error, print_table
from dlaas_jupyter.job import Job, JobTable, widgets_available
from dlaas_jupyter.packaging.locate import NotebookNotFound, current_notebook
from dlaas_jupyter.packaging.notebook import package_notebook, stale_cells, to_zip
from dlaas_jupyter.packaging.options import METRICS, TrainOptions, build_request, describe

__all__ = ["DlaasMagics"]

RED, YELLOW, DIM, RESET = "\x1b[31m", "\x1b[33m", "\x1b[2m", "\x1b[0m"

# What a user can fix: shown as one line. ManifestError, OptionsError,
# PackagingError, ArchiveError and NotebookNotFound are ValueErrors.
USER_ERRORS: tuple[type[BaseException], ...] = (DlaasError, ValueError, OSError)

F = TypeVar("F", bound=Callable[..., Any])


def error(message: str) -> None:
    print(f"{RED}dlaas: error: {message}{RESET}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"{YELLOW}dlaas: warning: {message}{RESET}", file=sys.stderr, flush=True)


def _reports_errors(method: F) -> F:
    """Print a user error as one red line and return None instead of raising."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except USER_ERRORS as exc:
            error(" ".join(describe_error(exc).split()))  # one line, whatever the message holds
            return None

    return wrapper  # type: ignore[return-value]


def parse_args(magic: Callable[..., Any], line: str) -> argparse.Namespace:
    """The magic's arguments, split as a shell splits them: IPython's
    parse_argstring keeps the quotes around a quoted value."""
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot split the arguments ({exc}): {line}") from None
    return magic.parser.parse_args(argv)  # type: ignore[attr-defined]


def stale_warning(cells: Sequence[int]) -> str:
    """The warning for cells whose saved source differs from what the kernel ran."""
    numbered = [str(number) for number in cells if number]
    parts = []
    if numbered:
        parts.append(("cell " if len(numbered) == 1 else "cells ") + ", ".join(numbered))
    if 0 in cells:
        parts.append("a cell that is not saved yet")
    return (
        f"the saved notebook differs from what you ran in {' and '.join(parts)}: "
        "save it (Ctrl+S) first — training the saved version"
    )


@magics_class
class DlaasMagics(Magics):
    """``%load_ext dlaas_jupyter`` registers these; ``%dlaas_<name>?`` shows each one's help.

    Where the Trainer is comes from the environment (DLAAS_TRAINER_URL, ...)
    unless ``%dlaas_config`` changed it for this kernel session.
    """

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self._settings: dict[str, str] = {}  # variable name -> value, from %dlaas_config
        self._embedded = False  # %dlaas_config --embedded: ignore DLAAS_TRAINER_URL
        self._client: TrainerClient | None = None

    # -- session --------------------------------------------------------------

    def _environ(self) -> dict[str, str]:
        environ = dict(os.environ)
        if self._embedded:
            for name in (URL_ENV, TOKEN_ENV, CA_ENV, SERVER_NAME_ENV):
                environ.pop(name, None)
        environ.update(self._settings)
        return environ

    def session_config(self) -> TrainerConfig:
        """The Trainer configuration of this kernel session."""
        return TrainerConfig.resolve(environ=self._environ())

    def session_client(self) -> TrainerClient:
        """The session's client, shared by the Jobs it creates (one channel)."""
        if self._client is None:
            self._client = TrainerClient(self.session_config())
        return self._client

    @property
    def _user_ns(self) -> dict[str, Any]:
        assert self.shell is not None  # magics are only registered on a shell
        return self.shell.user_ns

    def _notebook(self, explicit: str | None = None) -> Path:
        return current_notebook(explicit, user_ns=self._user_ns)

    def _folder(self) -> Path | None:
        """Where a job's downloads go by default: beside the notebook, if known."""
        try:
            return self._notebook().parent
        except NotebookNotFound:
            return None

    def _job(self, training_id: str) -> Job:
        job = Job(training_id, self.session_client(), folder=self._folder())
        job.info()  # an unknown id fails here, with the Trainer's message
        return job

    # -- training -------------------------------------------------------------

    @magic_arguments()
    @argument("--name", help="the job's name (default: the manifest's, else the notebook's)")
    @argument("--description", help="a description shown with the job")
    @argument("--cpus", type=float, help="CPUs per learner")
    @argument("--gpus", type=float, help="GPUs per learner")
    @argument("--memory", metavar="SIZE", help="memory per learner, e.g. 2GiB (MB, MiB, GB, GiB)")
    @argument("--learners", type=int, help="how many learner processes run the code")
    @argument("--framework", metavar="NAME:VERSION", help="default: python:<this Python's version>")
    @argument("--command", help="what starts training (default: python main.py)")
    @argument(
        "--metrics",
        choices=list(METRICS),
        help="how the job reports metric curves: logger (dlaas_jupyter.emit), regex (log "
        "lines, see --metric-regex), file (evaluation-metrics.txt), tensorboard",
    )
    @argument(
        "--metric-regex",
        action="append",
        metavar="[GROUP:]REGEX",
        help='log lines as metrics, e.g. "train: Iteration %%{INT:iteration}, '
        'loss = %%{FLOAT:loss}"; repeatable, one per group',
    )
    @argument("--manifest", metavar="FILE", help="an FfDL manifest.yml; flags override it")
    @argument(
        "--include",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="files or folders (beside the notebook) to send with the code",
    )
    @argument("--notebook", metavar="PATH", help="the notebook to train (default: this one)")
    @argument(
        "--dry-run",
        action="store_true",
        help="show the files and the request, submit nothing",
    )
    @argument(
        "--wait",
        action="store_true",
        help="print the log as text until the job ends (for papermill, nbclient, terminals)",
    )
    @no_var_expand
    @line_cell_magic
    @_reports_errors
    def dlaas_train(self, line: str, cell: str | None = None) -> Job | None:
        """Train the saved notebook (``%dlaas_train``), or this cell with what it
        needs from the cells above (``%%dlaas_train``), on the Trainer.

        Returns the Job: displayed, it is the live monitor (log, metric curves,
        Halt/Download/Delete). Save the notebook first: the saved file is what
        is packaged.
        """
        args = parse_args(self.dlaas_train, line)
        options = TrainOptions(
            name=args.name,
            description=args.description or "",
            cpus=args.cpus,
            gpus=args.gpus,
            memory=args.memory,
            learners=args.learners,
            framework=args.framework,
            command=args.command,
            metrics=args.metrics,
            metric_regex=args.metric_regex or [],
            manifest=Path(args.manifest) if args.manifest else None,
            include=[Path(path) for path in args.include or ()],
            notebook=Path(args.notebook) if args.notebook else None,
            dry_run=args.dry_run,
            wait=args.wait,
        )
        notebook = self._notebook(args.notebook)
        self._warn_if_stale(notebook, explicit=args.notebook is not None)
        packaged = package_notebook(notebook, cell_source=cell, include=options.include)
        for note in packaged.notes:
            print(f"{DIM}note: {note}{RESET}")
        request = build_request(to_zip(packaged), options, default_name=notebook.stem)
        if options.dry_run:
            print(describe(request, packaged.files), end="")
            return None
        client = self.session_client()
        training_id = client.create(request)
        print(f"Submitted {training_id} ({request.model_definition.name})", flush=True)
        job = Job(training_id, client, folder=notebook.parent)
        if options.wait:
            self._follow(job)
        return job

    def _warn_if_stale(self, notebook: Path, *, explicit: bool) -> None:
        """Warn when the saved notebook is not what this kernel ran (only for the
        kernel's own notebook: another one was never run here)."""
        if explicit:
            try:
                if self._notebook() != notebook:
                    return
            except NotebookNotFound:
                return
        executed = self._user_ns.get("In")
        if not isinstance(executed, list):
            return
        stale = stale_cells(notebook, executed)
        if stale:
            warn(stale_warning(stale))

    @staticmethod
    def _follow(job: Job) -> None:
        """Print the job's log until it ends; Ctrl+C stops watching, not the job."""
        from dlaas_jupyter.widgets.text import follow_as_text

        try:
            follow_as_text(job.id, job.client)
        except KeyboardInterrupt:
            print(f"\nStopped following; {job.id} keeps running (%dlaas_halt {job.id} stops it)")

    # -- jobs -----------------------------------------------------------------

    @line_magic
    @_reports_errors
    def dlaas_jobs(self, line: str) -> JobTable | None:
        """Your training jobs, oldest first: an HTML table in Jupyter, text elsewhere."""
        return JobTable(self.session_client().list())

    @magic_arguments()
    @argument("training_id", metavar="ID")
    @line_magic
    @_reports_errors
    def dlaas_status(self, line: str) -> Job | None:
        """The job ID as a Job object; displayed, it is the live monitor
        (how a monitor is picked up again after a kernel restart)."""
        args = parse_args(self.dlaas_status, line)
        return self._job(args.training_id)

    @magic_arguments()
    @argument("training_id", metavar="ID")
    @argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    @line_magic
    @_reports_errors
    def dlaas_logs(self, line: str) -> None:
        """Print a job's log lines."""
        args = parse_args(self.dlaas_logs, line)
        job = self._job(args.training_id)
        if args.follow:
            self._follow(job)
        else:
            for text in job.logs():
                print(text)

    @magic_arguments()
    @argument("training_id", metavar="ID")
    @line_magic
    @_reports_errors
    def dlaas_metrics(self, line: str) -> Any:
        """A job's evaluation metrics so far: a figure in Jupyter, a table elsewhere."""
        args = parse_args(self.dlaas_metrics, line)
        job = self._job(args.training_id)
        if not widgets_available():
            print(job.metrics_table(), end="")
            return None
        curves = job.metric_curves()
        if not curves.counts():
            print(f"{job.id} has no metric records yet")
            return None
        return curves

    @magic_arguments()
    @argument("training_id", metavar="ID")
    @line_magic
    @_reports_errors
    def dlaas_halt(self, line: str) -> None:
        """Stop a job, keeping what it wrote (logs, metrics, results so far)."""
        args = parse_args(self.dlaas_halt, line)
        print(f"{args.training_id}: {self._job(args.training_id).halt()}")

    @magic_arguments()
    @argument("training_id", metavar="ID")
    @line_magic
    @_reports_errors
    def dlaas_delete(self, line: str) -> None:
        """Delete a job with its logs, metrics and results."""
        args = parse_args(self.dlaas_delete, line)
        self._job(args.training_id).delete()
        print(f"Deleted {args.training_id}")

    @magic_arguments()
    @argument("training_id", metavar="ID")
    @argument(
        "--definition",
        action="store_true",
        help="the submitted model definition instead of the trained model",
    )
    @argument("--to", metavar="DIR", help="the folder to save into (default: the notebook's)")
    @argument("--extract", action="store_true", help="also unzip it into a folder beside the zip")
    @line_magic
    @_reports_errors
    def dlaas_download(self, line: str) -> None:
        """Download a job's trained model (RESULT_DIR and logs) as ID-trainedmodel.zip."""
        args = parse_args(self.dlaas_download, line)
        job = self._job(args.training_id)
        folder = None
        if args.to:
            folder = Path(args.to).expanduser()
            folder.mkdir(parents=True, exist_ok=True)
        path = job.download_definition(folder) if args.definition else job.download(folder)
        print(f"Saved {path}")
        if args.extract:
            target = path.with_suffix("")
            with zipfile.ZipFile(path) as archive:
                archive.extractall(target)  # names are made safe by extractall
            print(f"Extracted into {target}")

    @line_magic
    @_reports_errors
    def dlaas_versions(self, line: str) -> None:
        """The frameworks and versions the Trainer offers."""
        frameworks = self.session_client().versions()
        rows = [
            (name, ", ".join(detail.version for detail in details))
            for name, details in sorted(frameworks.items())
        ]
        print_table(("FRAMEWORK", "VERSIONS"), rows)

    # -- configuration --------------------------------------------------------

    @magic_arguments()
    @argument("--url", help="grpc://host:port or grpcs://host:port of an FfDL Trainer")
    @argument("--user", help="the user id jobs are submitted as")
    @argument("--token", help="sent as 'authorization: Bearer TOKEN'")
    @argument(
        "--embedded",
        action="store_true",
        help="use the embedded Trainer again (ignores DLAAS_TRAINER_URL)",
    )
    @line_magic
    @_reports_errors
    def dlaas_config(self, line: str) -> None:
        """Show where jobs go and as whom; with options, change it for this kernel session.

        Unchanged settings come from DLAAS_TRAINER_URL, DLAAS_TRAINER_TOKEN,
        DLAAS_USER, ... as for every other component.
        """
        args = parse_args(self.dlaas_config, line)
        if args.embedded and args.url:
            raise ValueError("give --url or --embedded, not both")
        settings = dict(self._settings)
        embedded = self._embedded
        if args.embedded:
            embedded = True
            for name in (URL_ENV, TOKEN_ENV):
                settings.pop(name, None)
        if args.url:
            settings[URL_ENV] = validate_url(args.url)
            embedded = False
        if args.token is not None:
            settings[TOKEN_ENV] = args.token
        if args.user is not None:
            if not args.user.strip():
                raise ValueError("--user: give a non-empty user id")
            settings[USER_ENV] = args.user.strip()
        if (settings, embedded) != (self._settings, self._embedded):
            previous = self._settings, self._embedded
            self._settings, self._embedded = settings, embedded
            try:
                self.session_config()  # refuse a combination that does not resolve
            except ValueError:
                self._settings, self._embedded = previous
                raise
            self._client = None  # Jobs made before keep their own client
        self._show_config()

    def _show_config(self) -> None:
        environ = self._environ()
        config = TrainerConfig.resolve(environ=environ)

        def origin(name: str) -> str:
            if name in self._settings or (name == URL_ENV and self._embedded):
                return "%dlaas_config"
            return name if environ.get(name) else ""

        if config.embedded:
            trainer = f"embedded (data dir {config.data_dir})"
        else:
            trainer = f"{config.url}"
        rows = [
            ("Trainer", trainer, origin(URL_ENV)),
            ("User", config.user, origin(USER_ENV)),
            ("Token", "set" if config.token else "not set", origin(TOKEN_ENV)),
        ]
        if config.ca_file:
            rows.append(("TLS CA", config.ca_file, origin(CA_ENV)))
        if config.server_name:
            rows.append(("TLS name", config.server_name, origin(SERVER_NAME_ENV)))
        print_table(("SETTING", "VALUE", "FROM"), rows)
