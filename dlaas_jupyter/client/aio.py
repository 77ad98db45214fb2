"""The asyncio Trainer client, for the kernel's and the server's event loops:
waiting on the Trainer never blocks the notebook or other requests."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from dlaas_jupyter.client import follow as live
from dlaas_jupyter.client.channel import DownloadFile, Endpoint, page_query, prepare_create
from dlaas_jupyter.client.config import TrainerConfig
from dlaas_jupyter.client.errors import translate
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto import trainer_pb2_grpc as pb_grpc


class AsyncTrainerClient:
    """The asyncio twin of :class:`~dlaas_jupyter.client.sync.TrainerClient`.

    Creating it does no I/O; the first call (or ``await connect()``, or
    ``async with``) locates the Trainer, starting the embedded one in a worker
    thread if needed, and opens the channel on the running loop.
    """

    def __init__(self, config: TrainerConfig | None = None, *, timeout: float = 30.0) -> None:
        self.config = config if config is not None else TrainerConfig.resolve()
        self.user = self.config.user
        self.timeout = timeout
        self._endpoint = None if self.config.embedded else Endpoint.locate(self.config)
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.TrainerStub | None = None
        self._connecting = asyncio.Lock()

    @property
    def address(self) -> str:
        """The grpc:// URL in use (for the embedded Trainer: once connected)."""
        if self._endpoint is None:
            raise RuntimeError("the embedded Trainer is not located yet: await connect() first")
        return self._endpoint.url

    async def connect(self) -> AsyncTrainerClient:
        async with self._connecting:
            if self._stub is None:
                if self._endpoint is None:
                    self._endpoint = await asyncio.to_thread(Endpoint.locate, self.config)
                self._channel = self._endpoint.aio_channel()
                self._stub = pb_grpc.TrainerStub(self._channel)
        return self

    async def _method(self, name: str) -> tuple[Any, Endpoint]:
        if self._stub is None:
            await self.connect()
        assert self._stub is not None and self._endpoint is not None
        return getattr(self._stub, name), self._endpoint

    async def _unary(self, name: str, request: object, training_id: str | None = None) -> Any:
        method, endpoint = await self._method(name)
        try:
            return await method(request, timeout=self.timeout, metadata=endpoint.metadata())
        except grpc.RpcError as err:
            raise translate(err, address=endpoint.url, training_id=training_id) from None

    async def _stream(
        self,
        name: str,
        request: object,
        training_id: str,
        *,
        follow: bool = False,
        timeout: float | None = None,
    ) -> AsyncGenerator[Any, None]:
        method, endpoint = await self._method(name)
        call = method(request, timeout=timeout, metadata=endpoint.metadata(follow=follow))
        try:
            async for item in call:
                yield item
        except grpc.RpcError as err:
            raise translate(err, address=endpoint.url, training_id=training_id) from None
        finally:
            call.cancel()

    async def create(self, request: pb.CreateRequest) -> str:
        """Submit a job; returns its training id. Without datastores, the
        working directory is mounted as FfDL's local datastore."""
        response = await self._unary("CreateTrainingJob", prepare_create(request, self.user))
        return response.training_id

    async def get(self, training_id: str) -> pb.Job:
        request = pb.GetRequest(training_id=training_id, user_id=self.user)
        return (await self._unary("GetTrainingJob", request, training_id)).job

    async def list(self) -> builtins.list[pb.Job]:
        response = await self._unary("GetAllTrainingsJobs", pb.GetAllRequest(user_id=self.user))
        return builtins.list(response.jobs)

    async def status(self, training_id: str) -> int:
        request = pb.GetRequest(training_id=training_id, user_id=self.user)
        return (await self._unary("GetTrainingStatusID", request, training_id)).status

    async def halt(self, training_id: str) -> pb.HaltResponse:
        request = pb.HaltRequest(training_id=training_id, user_id=self.user)
        return await self._unary("HaltTrainingJob", request, training_id)

    async def delete(self, training_id: str) -> None:
        request = pb.DeleteRequest(training_id=training_id, user_id=self.user)
        await self._unary("DeleteTrainingJob", request, training_id)

    async def resume(self, training_id: str) -> pb.ResumeResponse:
        request = pb.ResumeRequest(training_id=training_id, user_id=self.user)
        return await self._unary("ResumeTrainingJob", request, training_id)

    async def update(self, request: pb.UpdateRequest) -> str:
        prepared = pb.UpdateRequest()
        prepared.CopyFrom(request)
        prepared.user_id = prepared.user_id or self.user
        response = await self._unary("UpdateTrainingJob", prepared, prepared.training_id)
        return response.training_id

    async def versions(self) -> dict[str, builtins.list[pb.FrameworkDetails]]:
        frameworks = await self._unary("GetVersions", pb.GetVersionsRequest())
        return {name: builtins.list(d.versions) for name, d in frameworks.frameworks.items()}

    async def logs(
        self, training_id: str, *, pos: int = 0, pagesize: int = 0, since: str = "", subid: str = ""
    ) -> builtins.list[pb.LogLine]:
        """One page of log lines, with FfDL's pos/pagesize/since rules."""
        query = page_query(
            training_id, self.user, pos=pos, pagesize=pagesize, since=since, subid=subid
        )
        return [
            r
            async for r in self._stream("GetTrainingLogs", query, training_id, timeout=self.timeout)
        ]

    async def emetrics(
        self, training_id: str, *, pos: int = 0, pagesize: int = 0, since: str = "", subid: str = ""
    ) -> builtins.list[pb.EMetrics]:
        """One page of evaluation-metric records."""
        query = page_query(
            training_id, self.user, pos=pos, pagesize=pagesize, since=since, subid=subid
        )
        stream = self._stream("GetTrainingEMetrics", query, training_id, timeout=self.timeout)
        return [r async for r in stream]

    def follow_logs(
        self, training_id: str, *, poll_interval: float = 1.0, tail: int = 0
    ) -> AsyncIterator[pb.LogLine]:
        """Every log line of the job, live, ending once it has finished; with
        ``tail``, of the lines already logged only the last ``tail``."""
        return self._follow("GetTrainingLogs", training_id, poll_interval, tail)

    def follow_emetrics(
        self, training_id: str, *, poll_interval: float = 1.0
    ) -> AsyncIterator[pb.EMetrics]:
        """Every metric record of the job, live, ending once it has finished."""
        return self._follow("GetTrainingEMetrics", training_id, poll_interval)

    async def _follow(
        self, name: str, training_id: str, poll_interval: float, tail: int = 0
    ) -> AsyncIterator[Any]:
        cursor = live.Cursor.for_job(await self.get(training_id), self.user)

        def fetch(query: pb.Query, follow: bool) -> AsyncGenerator[Any, None]:
            # A follow stream may stay open as long as the job runs: no deadline.
            timeout = None if follow else self.timeout
            return self._stream(name, query, training_id, follow=follow, timeout=timeout)

        records = live.afollow(
            live.plan(cursor, poll_interval=poll_interval, tail=tail),
            cursor,
            fetch=fetch,
            status=lambda: self.status(training_id),
        )
        async with aclosing(records):
            async for record in records:
                yield record

    async def download_definition(self, training_id: str, dest: str | Path) -> Path:
        """Save the submitted model-definition zip to ``dest`` (a file, or a
        folder to hold ``<id>-definition.zip``)."""
        return await self._download(
            self.definition_chunks(training_id), training_id, dest, "definition"
        )

    async def download_trained_model(self, training_id: str, dest: str | Path) -> Path:
        """Save the zip of the job's results to ``dest`` (a file, or a folder
        to hold ``<id>-trainedmodel.zip``)."""
        return await self._download(
            self.trained_model_chunks(training_id), training_id, dest, "trainedmodel"
        )

    async def definition_chunks(self, training_id: str) -> AsyncGenerator[bytes, None]:
        """The submitted model-definition zip, chunk by chunk as the Trainer
        sends it (to relay it without holding it whole)."""
        request = pb.ModelDefinitionRequest(training_id=training_id, user_id=self.user)
        async with aclosing(self._stream("GetModelDefinition", request, training_id)) as chunks:
            async for chunk in chunks:
                yield chunk.data

    async def trained_model_chunks(self, training_id: str) -> AsyncGenerator[bytes, None]:
        """The zip of the job's results, chunk by chunk as the Trainer sends it."""
        request = pb.TrainedModelRequest(training_id=training_id, user_id=self.user)
        async with aclosing(self._stream("GetTrainedModel", request, training_id)) as chunks:
            async for chunk in chunks:
                yield chunk.data

    async def _download(
        self, chunks: AsyncGenerator[bytes, None], training_id: str, dest: str | Path, kind: str
    ) -> Path:
        async with aclosing(chunks):
            with DownloadFile(dest, f"{training_id}-{kind}.zip") as out:
                async for chunk in chunks:
                    out.write(chunk)
        return out.dest

    async def trained_model_logs(
        self, training_id: str, *, follow: bool = False, is_metrics: bool = False
    ) -> AsyncIterator[bytes]:
        """FfDL's deprecated raw log (or metrics) stream, as byte chunks."""
        request = pb.TrainedModelLogRequest(
            training_id=training_id, user_id=self.user, follow=follow, is_metrics=is_metrics
        )
        async with aclosing(self._stream("GetTrainedModelLogs", request, training_id)) as chunks:
            async for chunk in chunks:
                yield chunk.data

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def __aenter__(self) -> AsyncTrainerClient:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
