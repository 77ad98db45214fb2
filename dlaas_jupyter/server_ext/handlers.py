"""The REST API under ``{base_url}dlaas/api/``: jobs, their logs, metrics and zips.

Every handler is authenticated (Jupyter's token or login cookie; mutations
with a cookie also need the XSRF token, which jupyter_server checks) and
async. Domain errors become HTTP statuses with a JSON body ``{"message": ...}``
in one place, :class:`DlaasMixin` (see :func:`http_status`), never 500.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.httputil import responses
from tornado.iostream import StreamClosedError

from dlaas_jupyter.client import (
    AsyncTrainerClient,
    AuthenticationFailed,
    DlaasError,
    InvalidRequest,
    JobNotFound,
    PermissionDenied,
    TrainerError,
    Unsupported,
)
from dlaas_jupyter.client.channel import add_local_datastore
from dlaas_jupyter.formatting import status_name
from dlaas_jupyter.packaging.notebook import package_notebook, to_zip
from dlaas_jupyter.packaging.options import TrainOptions, build_request
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.server_ext.serialize import (
    emetrics_json,
    job_json,
    jobs_json,
    log_json,
    versions_json,
)

AUTH_RESOURCE = "dlaas"
API = "dlaas/api"
JOB = rf"{API}/jobs/(?P<training_id>[^/]+)"

# Trainer answers meaning "not in this state": halting, deleting or
# downloading what cannot be right now.
CONFLICT_CODES = frozenset(
    {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED, grpc.StatusCode.ALREADY_EXISTS}
)


def http_status(error: BaseException) -> int | None:
    """The HTTP status for a domain error; None for anything else (a bug: 500)."""
    if isinstance(error, (InvalidRequest, ValueError)):  # OptionsError, ManifestError too
        return 400
    if isinstance(error, (PermissionDenied, AuthenticationFailed)):
        return 403
    if isinstance(error, JobNotFound):
        return 404
    if isinstance(error, TrainerError):
        return 409 if error.code in CONFLICT_CODES else 502
    if isinstance(error, Unsupported):
        return 501
    if isinstance(error, DlaasError):  # TrainerUnavailable, and any the client adds
        return 502
    return None


if TYPE_CHECKING:
    _Handler = JupyterHandler  # what the mixin is mixed into
else:
    _Handler = object


class DlaasMixin(_Handler):
    """The services the app put in the settings, and the mapping of domain errors.

    Mixed in before Jupyter's handler classes, so its ``write_error`` and
    ``log_exception`` come first.
    """

    auth_resource = AUTH_RESOURCE

    @property
    def trainer(self) -> AsyncTrainerClient:
        client: AsyncTrainerClient | None = self.settings.get("dlaas_client")
        if client is None:
            raise web.HTTPError(
                503, self.settings.get("dlaas_config_error") or "the Trainer is not configured"
            )
        return client

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reply = error_reply(kwargs.get("exc_info", (None, None, None))[1])
        if reply is None:
            super().write_error(status_code, **kwargs)
            return
        self.set_status(reply[0])
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": reply[1]}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        reply = error_reply(value)
        if reply is None:
            super().log_exception(typ, value, tb)
        else:  # no traceback, and no %-formatting of a message that may hold a user's path
            self.log.warning(
                "%d %s %s: %s", reply[0], self.request.method, self.request.path, reply[1]
            )


def error_reply(error: BaseException | None) -> tuple[int, str] | None:
    """(status, message) for a domain error or an HTTPError; None for a bug."""
    if isinstance(error, web.HTTPError):
        message = error.log_message or responses.get(error.status_code, "error")
        return error.status_code, message % error.args if error.args else message
    status = http_status(error) if error is not None else None
    return None if status is None else (status, str(error))


class DlaasHandler(DlaasMixin, ExtensionHandlerMixin, APIHandler):
    """Base of the REST handlers."""

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, allow_nan=False))


class HealthHandler(DlaasHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Whether the Trainer answers, which one it is and who we are to it."""
        config_error = self.settings.get("dlaas_config_error")
        if config_error:
            self.write_json(
                {"reachable": False, "trainer": None, "user": None, "error": config_error}
            )
            return
        client = self.trainer
        reply: dict[str, Any] = {
            "reachable": True,
            "trainer": client.config.url or "embedded",
            "user": client.user,
        }
        try:
            await client.versions()
        except DlaasError as err:
            reply.update(reachable=False, error=str(err))
        self.write_json(reply)


class VersionsHandler(DlaasHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(versions_json(await self.trainer.versions()))


class JobsHandler(DlaasHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """The user's jobs, newest first."""
        self.write_json({"jobs": jobs_json(await self.trainer.list())})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Package a notebook under the server's root and submit it."""
        root = Path(self.serverapp.root_dir)
        body = self.get_json_body()
        submission = parse_submission(body)
        notebook = inside_root(root, submission.path, "notebook")
        if submission.options.manifest is not None:
            submission.options.manifest = inside_root(
                root, str(submission.options.manifest), "manifest"
            )
        request, notes = await asyncio.to_thread(package, notebook, submission.options)
        training_id = await self.trainer.create(request)
        self.set_header("Location", f"{self.base_url}{API}/jobs/{training_id}")
        self.write_json(
            {"training_id": training_id, "name": request.model_definition.name, "notes": notes},
            status=201,
        )


class JobHandler(DlaasHandler):
    @web.authenticated
    @authorized
    async def get(self, training_id: str) -> None:
        self.write_json(job_json(await self.trainer.get(training_id)))

    @web.authenticated
    @authorized
    async def delete(self, training_id: str) -> None:
        """Stop the job if it runs and remove it with its logs, metrics and results."""
        await self.trainer.delete(training_id)
        self.set_status(204)
        self.finish()


class HaltHandler(DlaasHandler):
    @web.authenticated
    @authorized
    async def post(self, training_id: str) -> None:
        """Stop the job, keeping what it wrote; a finished job keeps its status."""
        response = await self.trainer.halt(training_id)
        self.write_json({"training_id": training_id, "status": status_name(response.status)})


class LogsHandler(DlaasHandler):
    @web.authenticated
    @authorized
    async def get(self, training_id: str) -> None:
        """One page of log lines (the Trainer's pos/pagesize/since rules)."""
        lines = await self.trainer.logs(training_id, **page_arguments(self))
        self.write_json({"lines": [log_json(line) for line in lines]})


class MetricsHandler(DlaasHandler):
    @web.authenticated
    @authorized
    async def get(self, training_id: str) -> None:
        """One page of evaluation-metric records."""
        records = await self.trainer.emetrics(training_id, **page_arguments(self))
        self.write_json({"records": [emetrics_json(record) for record in records]})


class _DownloadHandler(DlaasHandler):
    """A zip streamed from the Trainer to the browser a chunk at a time."""

    suffix: str

    def chunks(self, training_id: str) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError

    @web.authenticated
    @authorized
    async def get(self, training_id: str) -> None:
        async with aclosing(self.chunks(training_id)) as chunks:
            # The Trainer's refusals (not found, not yours, no results) come
            # with the first chunk, while an error status can still be sent.
            first = await anext(chunks, b"")
            self.set_header(
                "Content-Disposition", f'attachment; filename="{training_id}-{self.suffix}.zip"'
            )
            self.set_header("Content-Type", "application/zip")
            self.set_header("Cache-Control", "no-store")
            try:
                self.write(first)
                await self.flush()
                async for chunk in chunks:
                    self.write(chunk)
                    await self.flush()  # waits for the socket: memory stays flat
            except StreamClosedError:
                return  # the browser went away; leaving the block cancels the call
            except DlaasError as err:
                # Too late for an error status: drop the connection so the
                # browser sees a failed download, never a truncated zip.
                self.log.warning("download of %s failed midway: %s", training_id, err)
                self.detach().close()
                return
        self.finish(set_content_type="application/zip")


class ModelDownloadHandler(_DownloadHandler):
    suffix = "trainedmodel"

    def chunks(self, training_id: str) -> AsyncGenerator[bytes, None]:
        return self.trainer.trained_model_chunks(training_id)


class DefinitionDownloadHandler(_DownloadHandler):
    suffix = "definition"

    def chunks(self, training_id: str) -> AsyncGenerator[bytes, None]:
        return self.trainer.definition_chunks(training_id)


# -- arguments -------------------------------------------------------------------


def integer_argument(handler: web.RequestHandler, name: str, minimum: int | None = None) -> int:
    """A whole-number query parameter (0 when absent), checked."""
    text = handler.get_query_argument(name, "0").strip() or "0"
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"query parameter {name}={text!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"query parameter {name}={value} must be at least {minimum}")
    return value


def page_arguments(handler: web.RequestHandler) -> dict[str, Any]:
    """pos, pagesize, since and subid from the query string, checked."""
    since = handler.get_query_argument("since", "").strip()
    if since and not (since.isascii() and since.isdigit()):
        raise ValueError(f"query parameter since={since!r} must be milliseconds since the epoch")
    return {
        "pos": integer_argument(handler, "pos"),
        "pagesize": integer_argument(handler, "pagesize", minimum=0),
        "since": since,
        "subid": handler.get_query_argument("subid", "").strip(),
    }


@dataclass
class Submission:
    """A checked POST jobs body: the notebook path and the training options."""

    path: str
    options: TrainOptions


NUMBER = (int, float)
# Body fields besides "path", with the JSON types each accepts.
OPTION_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "description": (str,),
    "cpus": NUMBER,
    "gpus": NUMBER,
    "memory": (str,),
    "learners": (int,),
    "framework": (str,),
    "command": (str,),
    "metrics": (str,),
    "metric_regex": (str, list),
    "manifest": (str,),
}


def parse_submission(body: Any) -> Submission:
    """Check the body's fields and types (400 naming the field); build_request checks values."""
    if not isinstance(body, dict):
        raise web.HTTPError(400, "the body must be a JSON object with at least a notebook 'path'")
    unknown = sorted(set(body) - set(OPTION_FIELDS) - {"path"})
    if unknown:
        raise web.HTTPError(
            400, f"unknown field(s) {', '.join(unknown)}; expected path, {', '.join(OPTION_FIELDS)}"
        )
    path = body.get("path")
    if not isinstance(path, str) or not path.strip():
        raise web.HTTPError(
            400, "'path' must name the notebook, relative to the server's root directory"
        )
    given: dict[str, Any] = {}
    for name, types in OPTION_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            kinds = " or ".join(_JSON_NAMES[t] for t in types)
            raise web.HTTPError(400, f"'{name}' must be {kinds}, not {json.dumps(value)}")
        given[name] = value
    regexes = given.pop("metric_regex", [])
    if isinstance(regexes, str):
        regexes = [regexes]
    if not all(isinstance(item, str) for item in regexes):
        raise web.HTTPError(400, "'metric_regex' must be a string or a list of strings")
    manifest = given.pop("manifest", None)
    options = TrainOptions(
        **given,
        metric_regex=regexes,
        manifest=Path(manifest) if manifest is not None else None,
    )
    return Submission(path, options)


_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", list: "a list"}


def inside_root(root: Path, relative: str, what: str) -> Path:
    """``relative`` (an API path, '/'-separated) under ``root``, symlinks resolved.

    Raises 403 for a path that leads outside the root and 404 for one that does not exist.
    """
    base = root.resolve()
    path = (base / relative.lstrip("/")).resolve()
    if not path.is_relative_to(base):
        raise web.HTTPError(403, f"{what} path {relative!r} is outside the server's root directory")
    if not path.exists():
        raise web.HTTPError(404, f"{what} {relative!r} not found")
    if not path.is_file():
        raise web.HTTPError(400, f"{what} {relative!r} is not a file")
    return path


def package(notebook: Path, options: TrainOptions) -> tuple[pb.CreateRequest, list[str]]:
    """The CreateRequest for the whole notebook (blocking: run it in a thread).

    Without datastores in a manifest, the job's data folder is the notebook's
    own, as for ``%dlaas_train`` run in a kernel started beside the notebook.
    """
    packaged = package_notebook(notebook)
    request = build_request(to_zip(packaged), options, default_name=notebook.stem)
    add_local_datastore(request, notebook.parent)
    return request, packaged.notes


Route = tuple[str, type[web.RequestHandler]]

routes: list[Route] = [
    (rf"{API}/health", HealthHandler),
    (rf"{API}/versions", VersionsHandler),
    (rf"{API}/jobs", JobsHandler),
    (rf"{JOB}", JobHandler),
    (rf"{JOB}/halt", HaltHandler),
    (rf"{JOB}/logs", LogsHandler),
    (rf"{JOB}/metrics", MetricsHandler),
    (rf"{JOB}/model", ModelDownloadHandler),
    (rf"{JOB}/definition", DefinitionDownloadHandler),
]

__all__ = [
    "API",
    "AUTH_RESOURCE",
    "DlaasHandler",
    "DlaasMixin",
    "http_status",
    "inside_root",
    "package",
    "page_arguments",
    "parse_submission",
    "routes",
]
