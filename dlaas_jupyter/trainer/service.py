"""The Trainer RPCs (grpc.trainer.v2) with FfDL's semantics, better where noted.

Better than FfDL: the owner is checked on every call that names a job (FfDL
skips logs, metrics and status); halting a finished job reports its real
status; delete removes files too; downloads have no size cap; and a query sent
with the metadata ``dlaas-follow: 1`` stays open and streams records as they
are stored, which a plain FfDL server ignores.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import string
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import grpc

from dlaas_jupyter.emit import METRICS_FILE
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto import trainer_pb2_grpc as pb_grpc
from dlaas_jupyter.proto.semantics import FOLLOW_METADATA
from dlaas_jupyter.trainer import lifecycle as lc
from dlaas_jupyter.trainer.capacity import default_resources
from dlaas_jupyter.trainer.events import JobEvents
from dlaas_jupyter.trainer.results import results_entries, stream_file, stream_zip
from dlaas_jupyter.trainer.runner import JobRunner
from dlaas_jupyter.trainer.scheduler import Scheduler
from dlaas_jupyter.trainer.store import Store, now_ms
from dlaas_jupyter.trainer.validation import InvalidJob, validate_create
from dlaas_jupyter.trainer.versions import versions_response
from dlaas_jupyter.trainer.workspace import (
    LOG_FILE,
    LOGS_DIR,
    METRICS_SPEC_FILE,
    MODEL_ZIP,
    DatastoreError,
    folders_for,
    job_root,
)

FOLLOW_BATCH = 5000
# How long a follower sleeps when nothing wakes it; notifications normally
# wake it within a millisecond.
FOLLOW_IDLE = 1.0
PERMISSION_MESSAGE = "User does not have permission to read training data"
ID_ALPHABET = string.ascii_letters + string.digits + "_-"
LOG_CHUNK = 1 << 20


def new_training_id() -> str:
    return "training-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(9))


class TrainerService(pb_grpc.TrainerServicer):
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        runner: JobRunner,
        events: JobEvents,
        jobs_root: Path,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._runner = runner
        self._events = events
        self._jobs_root = jobs_root

    # -- helpers ---------------------------------------------------------

    async def _owned(self, training_id: str, user_id: str, context: grpc.aio.ServicerContext) -> pb.Job:
        if not training_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "training_id is not set")
        job = self._store.get_job(training_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"training job {training_id} not found")
        if job.user_id != user_id:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, PERMISSION_MESSAGE)
        return job

    def _folders(self, job: pb.Job):
        try:
            return folders_for(self._jobs_root, job)
        except (DatastoreError, KeyError):
            return None

    # -- jobs ------------------------------------------------------------

    async def CreateTrainingJob(self, request: pb.CreateRequest, context) -> pb.CreateResponse:
        try:
            validate_create(request)
        except InvalidJob as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        tid = new_training_id()
        job = pb.Job(
            training_id=tid,
            user_id=request.user_id,
            job_id=tid,
            training=request.training,
            datastores=request.datastores,
        )
        job.model_definition.CopyFrom(request.model_definition)
        job.model_definition.ClearField("content")
        # As FfDL does: a folded YAML command keeps line breaks that the
        # shell would otherwise run as separate commands.
        job.training.command = re.sub(r"\r?\n", " ", job.training.command)
        _apply_resource_defaults(job.training)
        job.status.status = pb.QUEUED
        job.status.submission_timestamp = str(now_ms())
        root = job_root(self._jobs_root, tid)
        await asyncio.to_thread(_write_job_files, root, request)
        self._store.insert_job(job)
        self._scheduler.submit(tid)
        return pb.CreateResponse(training_id=tid)

    async def GetTrainingJob(self, request: pb.GetRequest, context) -> pb.GetResponse:
        return pb.GetResponse(job=await self._owned(request.training_id, request.user_id, context))

    async def GetTrainingStatusID(self, request: pb.GetRequest, context) -> pb.GetStatusIDResponse:
        job = await self._owned(request.training_id, request.user_id, context)
        return pb.GetStatusIDResponse(status=job.status.status)

    async def GetAllTrainingsJobs(self, request: pb.GetAllRequest, context) -> pb.GetAllResponse:
        if not request.user_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "UserId is nil")
        return pb.GetAllResponse(jobs=self._store.list_jobs(request.user_id))

    async def HaltTrainingJob(self, request: pb.HaltRequest, context) -> pb.HaltResponse:
        job = await self._owned(request.training_id, request.user_id, context)
        tid = job.training_id
        if self._scheduler.cancel(tid):
            self._store.update_status(tid, pb.HALTED, message=lc.HALTED_MESSAGE, error_code=lc.HALTED_CODE)
        else:
            await self._runner.halt(tid)
        job = self._store.get_job(tid)
        return pb.HaltResponse(training_id=tid, user_id=job.user_id, status=job.status.status)

    async def ResumeTrainingJob(self, request: pb.ResumeRequest, context) -> pb.ResumeResponse:
        await self._owned(request.training_id, request.user_id, context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "ResumeTrainingJob is not implemented (as in FfDL)")

    async def DeleteTrainingJob(self, request: pb.DeleteRequest, context) -> pb.DeleteResponse:
        job = await self._owned(request.training_id, request.user_id, context)
        tid = job.training_id
        self._scheduler.cancel(tid)
        await self._runner.halt(tid)
        folders = self._folders(job)
        self._store.delete_job(tid)
        await asyncio.to_thread(shutil.rmtree, job_root(self._jobs_root, tid), True)
        if folders is not None:
            await asyncio.to_thread(shutil.rmtree, folders.result_dir, True)
        return pb.DeleteResponse(training_id=tid)

    async def UpdateTrainingJob(self, request: pb.UpdateRequest, context) -> pb.UpdateResponse:
        job = await self._owned(request.training_id, request.user_id, context)
        if request.status not in pb.Status.values():
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"status {request.status} is not a training status"
            )
        if request.timestamp and not (request.timestamp.isascii() and request.timestamp.isdigit()):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"timestamp must be milliseconds since the epoch, got {request.timestamp!r}",
            )
        if lc.is_terminal(job.status.status):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"job {job.training_id} is already {pb.Status.Name(job.status.status)}",
            )
        # A terminal status ends the job first, so its learners stop and the
        # runner cannot overwrite the reported status when they would have ended.
        if lc.is_terminal(request.status) and not self._scheduler.cancel(job.training_id):
            await self._runner.halt(job.training_id)
        at = int(request.timestamp) if request.timestamp else None
        self._store.update_status(
            job.training_id,
            request.status,
            message=request.status_message or None,
            error_code=request.error_code or None,
            at_ms=at,
        )
        return pb.UpdateResponse(training_id=job.training_id)

    async def GetVersions(self, request: pb.GetVersionsRequest, context) -> pb.Frameworks:
        return await asyncio.to_thread(versions_response)

    # -- downloads -------------------------------------------------------

    async def GetModelDefinition(self, request: pb.ModelDefinitionRequest, context) -> AsyncIterator[pb.ZippedDataChunk]:
        job = await self._owned(request.training_id, request.user_id, context)
        async for chunk in stream_file(job_root(self._jobs_root, job.training_id) / MODEL_ZIP):
            yield pb.ZippedDataChunk(data=chunk)

    async def GetTrainedModel(self, request: pb.TrainedModelRequest, context) -> AsyncIterator[pb.ZippedDataChunk]:
        job = await self._owned(request.training_id, request.user_id, context)
        folders = self._folders(job)
        if folders is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job {job.training_id} has no results folder")
        async for chunk in stream_zip(results_entries(folders.result_dir, folders.logs_root)):
            yield pb.ZippedDataChunk(data=chunk)

    async def GetTrainedModelLogs(self, request: pb.TrainedModelLogRequest, context) -> AsyncIterator[pb.ByteStreamResponse]:
        job = await self._owned(request.training_id, request.user_id, context)
        tid = job.training_id
        name = METRICS_FILE if request.is_metrics else LOG_FILE
        logs_root = job_root(self._jobs_root, tid) / LOGS_DIR
        offsets: dict[Path, int] = {}
        while True:
            seen = self._events.version(tid)
            job = self._store.get_job(tid)
            finished = job is None or lc.is_terminal(job.status.status)
            sent = False
            for path in sorted(logs_root.glob(f"learner-*/{name}")):
                while data := await asyncio.to_thread(_read_from, path, offsets.get(path, 0), finished):
                    offsets[path] = offsets.get(path, 0) + len(data)
                    sent = True
                    yield pb.ByteStreamResponse(data=data)
            if not request.follow or (finished and not sent):
                return
            if not sent:
                await self._events.wait(tid, seen, FOLLOW_IDLE)

    # -- logs and evaluation metrics --------------------------------------

    async def GetTrainingLogs(self, request: pb.Query, context) -> AsyncIterator[pb.LogLine]:
        async for record in self._query(request, context, self._store.log_page, self._store.log_records_after):
            yield record

    async def GetTrainingEMetrics(self, request: pb.Query, context) -> AsyncIterator[pb.EMetrics]:
        async for record in self._query(request, context, self._store.emetrics_page, self._store.emetrics_after):
            yield record

    async def _query(
        self,
        query: pb.Query,
        context: grpc.aio.ServicerContext,
        page: Callable[..., Sequence],
        after: Callable[..., Sequence],
    ) -> AsyncIterator:
        if query.searchType != pb.Query.TERM:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"search type not supported: {pb.Query.SearchType.Name(query.searchType)}",
            )
        job = await self._owned(query.meta.training_id, query.meta.user_id, context)
        tid, subid = job.training_id, query.meta.subid
        pagesize = query.pagesize or 10
        try:
            records = page(tid, subid=subid, pos=query.pos, pagesize=pagesize, since=query.since)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        for record in records:
            yield record
        if FOLLOW_METADATA not in tuple(context.invocation_metadata() or ()):
            return
        # Follow: continue after the last record sent by time, which is
        # unique within a job; a caller paging by position keeps getting
        # only records at or past that position.
        last = records[-1].meta if records else None
        while True:
            seen = self._events.version(tid)
            job = self._store.get_job(tid)
            if job is None:
                return
            finished = lc.is_terminal(job.status.status)
            if last is None:
                batch = page(tid, subid=subid, pos=query.pos, pagesize=FOLLOW_BATCH, since=query.since)
            else:
                batch = after(tid, after_time=last.time, limit=FOLLOW_BATCH)
            for record in batch:
                if (not subid or record.meta.subid == subid) and record.meta.rindex >= query.pos:
                    yield record
            if batch:
                last = batch[-1].meta
                continue
            if finished:
                return
            await self._events.wait(tid, seen, FOLLOW_IDLE)


def _apply_resource_defaults(training: pb.Training) -> None:
    """Fill what the caller left out with what fits this machine (FfDL's fit a GPU node)."""
    res = training.resources
    defaults = default_resources()
    if not training.HasField("resources"):
        res.gpus = defaults["gpus"]
    if res.cpus == 0:
        res.cpus = defaults["cpus"]
    if res.memory == 0:
        res.memory = defaults["memory"] / 2**20
        res.memory_unit = pb.MiB
    if res.learners == 0:
        res.learners = 1


def _write_job_files(root: Path, request: pb.CreateRequest) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / MODEL_ZIP).write_bytes(request.model_definition.content)
    if request.HasField("evaluation_metrics"):
        (root / METRICS_SPEC_FILE).write_bytes(request.evaluation_metrics.SerializeToString())


def _read_from(path: Path, offset: int, whole: bool) -> bytes:
    """Up to a chunk of new bytes of a growing log, ending at a line end
    unless the job has ended or one line fills the chunk; nothing once the
    log is gone (the job was deleted)."""
    try:
        with open(path, "rb") as source:
            source.seek(offset)
            data = source.read(LOG_CHUNK)
    except FileNotFoundError:
        return b""
    if not whole and len(data) < LOG_CHUNK:
        data = data[: data.rfind(b"\n") + 1]
    return data
