"""The blocking Trainer client, for scripts, the CLI and threads."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc

from dlaas_jupyter.client import follow as live
from dlaas_jupyter.client.channel import DownloadFile, Endpoint, page_query, prepare_create
from dlaas_jupyter.client.config import TrainerConfig
from dlaas_jupyter.client.errors import translate
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto import trainer_pb2_grpc as pb_grpc

T = TypeVar("T")


class TrainerClient:
    """A typed client of one Trainer over one reused channel.

    Every call sends the user's id and the token; unary calls carry a deadline
    of ``timeout`` seconds; failures are raised as :class:`DlaasError`.
    """

    def __init__(self, config: TrainerConfig | None = None, *, timeout: float = 30.0) -> None:
        self.config = config if config is not None else TrainerConfig.resolve()
        self.user = self.config.user
        self.timeout = timeout
        self._endpoint = Endpoint.locate(self.config)
        self.address = self._endpoint.url
        self._channel = self._endpoint.sync_channel()
        self._stub = pb_grpc.TrainerStub(self._channel)

    def _unary(
        self, method: Callable[..., T], request: object, training_id: str | None = None
    ) -> T:
        try:
            return method(request, timeout=self.timeout, metadata=self._endpoint.metadata())
        except grpc.RpcError as err:
            raise translate(err, address=self.address, training_id=training_id) from None

    def _stream(
        self,
        method: Callable[..., Iterator[T]],
        request: object,
        training_id: str,
        *,
        follow: bool = False,
        timeout: float | None = None,
    ) -> Generator[T, None, None]:
        call = method(request, timeout=timeout, metadata=self._endpoint.metadata(follow=follow))
        try:
            yield from call
        except grpc.RpcError as err:
            raise translate(err, address=self.address, training_id=training_id) from None
        finally:
            call.cancel()  # type: ignore[attr-defined]

    def create(self, request: pb.CreateRequest) -> str:
        """Submit a job; returns its training id. Without datastores, the
        working directory is mounted as FfDL's local datastore."""
        response = self._unary(self._stub.CreateTrainingJob, prepare_create(request, self.user))
        return response.training_id

    def get(self, training_id: str) -> pb.Job:
        request = pb.GetRequest(training_id=training_id, user_id=self.user)
        return self._unary(self._stub.GetTrainingJob, request, training_id).job

    def list(self) -> builtins.list[pb.Job]:
        request = pb.GetAllRequest(user_id=self.user)
        return list(self._unary(self._stub.GetAllTrainingsJobs, request).jobs)

    def status(self, training_id: str) -> int:
        request = pb.GetRequest(training_id=training_id, user_id=self.user)
        return self._unary(self._stub.GetTrainingStatusID, request, training_id).status

    def halt(self, training_id: str) -> pb.HaltResponse:
        request = pb.HaltRequest(training_id=training_id, user_id=self.user)
        return self._unary(self._stub.HaltTrainingJob, request, training_id)

    def delete(self, training_id: str) -> None:
        request = pb.DeleteRequest(training_id=training_id, user_id=self.user)
        self._unary(self._stub.DeleteTrainingJob, request, training_id)

    def resume(self, training_id: str) -> pb.ResumeResponse:
        request = pb.ResumeRequest(training_id=training_id, user_id=self.user)
        return self._unary(self._stub.ResumeTrainingJob, request, training_id)

    def update(self, request: pb.UpdateRequest) -> str:
        prepared = pb.UpdateRequest()
        prepared.CopyFrom(request)
        prepared.user_id = prepared.user_id or self.user
        response = self._unary(self._stub.UpdateTrainingJob, prepared, prepared.training_id)
        return response.training_id

    def versions(self) -> dict[str, builtins.list[pb.FrameworkDetails]]:
        frameworks = self._unary(self._stub.GetVersions, pb.GetVersionsRequest())
        return {name: list(detail.versions) for name, detail in frameworks.frameworks.items()}

    def logs(
        self, training_id: str, *, pos: int = 0, pagesize: int = 0, since: str = "", subid: str = ""
    ) -> builtins.list[pb.LogLine]:
        """One page of log lines, with FfDL's pos/pagesize/since rules."""
        query = page_query(
            training_id, self.user, pos=pos, pagesize=pagesize, since=since, subid=subid
        )
        return list(
            self._stream(self._stub.GetTrainingLogs, query, training_id, timeout=self.timeout)
        )

    def emetrics(
        self, training_id: str, *, pos: int = 0, pagesize: int = 0, since: str = "", subid: str = ""
    ) -> builtins.list[pb.EMetrics]:
        """One page of evaluation-metric records."""
        query = page_query(
            training_id, self.user, pos=pos, pagesize=pagesize, since=since, subid=subid
        )
        return list(
            self._stream(self._stub.GetTrainingEMetrics, query, training_id, timeout=self.timeout)
        )

    def follow_logs(
        self, training_id: str, *, poll_interval: float = 1.0, tail: int = 0
    ) -> Iterator[pb.LogLine]:
        """Every log line of the job, live, ending once it has finished; with
        ``tail``, of the lines already logged only the last ``tail``."""
        return self._follow(self._stub.GetTrainingLogs, training_id, poll_interval, tail)

    def follow_emetrics(
        self, training_id: str, *, poll_interval: float = 1.0
    ) -> Iterator[pb.EMetrics]:
        """Every metric record of the job, live, ending once it has finished."""
        return self._follow(self._stub.GetTrainingEMetrics, training_id, poll_interval)

    def _follow(
        self,
        method: Callable[..., Iterator[live.Record]],
        training_id: str,
        poll_interval: float,
        tail: int = 0,
    ) -> Iterator[live.Record]:
        cursor = live.Cursor.for_job(self.get(training_id), self.user)

        def fetch(query: pb.Query, follow: bool) -> Generator[live.Record, None, None]:
            # A follow stream may stay open as long as the job runs: no deadline.
            timeout = None if follow else self.timeout
            return self._stream(method, query, training_id, follow=follow, timeout=timeout)

        yield from live.follow(
            live.plan(cursor, poll_interval=poll_interval, tail=tail),
            cursor,
            fetch=fetch,
            status=lambda: self.status(training_id),
        )

    def download_definition(self, training_id: str, dest: str | Path) -> Path:
        """Save the submitted model-definition zip to ``dest`` (a file, or a
        folder to hold ``<id>-definition.zip``)."""
        request = pb.ModelDefinitionRequest(training_id=training_id, user_id=self.user)
        return self._download(
            self._stub.GetModelDefinition, request, training_id, dest, "definition"
        )

    def download_trained_model(self, training_id: str, dest: str | Path) -> Path:
        """Save the zip of the job's results to ``dest`` (a file, or a folder
        to hold ``<id>-trainedmodel.zip``)."""
        request = pb.TrainedModelRequest(training_id=training_id, user_id=self.user)
        return self._download(
            self._stub.GetTrainedModel, request, training_id, dest, "trainedmodel"
        )

    def _download(
        self,
        method: Callable[..., Iterator[pb.ZippedDataChunk]],
        request: object,
        training_id: str,
        dest: str | Path,
        kind: str,
    ) -> Path:
        with (
            closing(self._stream(method, request, training_id)) as chunks,
            DownloadFile(dest, f"{training_id}-{kind}.zip") as out,
        ):
            for chunk in chunks:
                out.write(chunk.data)
        return out.dest

    def trained_model_logs(
        self, training_id: str, *, follow: bool = False, is_metrics: bool = False
    ) -> Iterator[bytes]:
        """FfDL's deprecated raw log (or metrics) stream, as byte chunks."""
        request = pb.TrainedModelLogRequest(
            training_id=training_id, user_id=self.user, follow=follow, is_metrics=is_metrics
        )
        with closing(self._stream(self._stub.GetTrainedModelLogs, request, training_id)) as chunks:
            for chunk in chunks:
                yield chunk.data

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TrainerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
