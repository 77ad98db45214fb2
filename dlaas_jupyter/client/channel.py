"""What the sync and asyncio clients share about talking to a Trainer: where it
is, how channels are built, the metadata sent with every call, the defaults a
CreateRequest gets, and how a streamed download lands in a file."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
import grpc.aio

from dlaas_jupyter.client.config import CA_ENV, TrainerConfig, target
from dlaas_jupyter.client.embedded import ensure_running
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.proto.semantics import FOLLOW_METADATA

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Keepalive finds a dead Trainer during long quiet streams. Pings go out only
# while calls are active, at most every 60 s: servers (grpc-go's default
# enforcement, gRPC core's ping strikes) hang up on clients that ping more often.
# Reconnect attempts are capped at 5 s apart (gRPC's default grows to 120 s) so a
# Trainer that comes back is found within a follow's retry budget.
CHANNEL_OPTIONS: tuple[tuple[str, int | str], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)

LOCAL_DATASTORE_ID = "local-data"


@dataclass(frozen=True)
class Endpoint:
    """A Trainer to dial: the remote one configured, or the embedded one found."""

    url: str
    token: str | None
    ca_file: str | None
    server_name: str | None

    @classmethod
    def locate(cls, config: TrainerConfig) -> Endpoint:
        """The configured Trainer; for the embedded one this may start it (blocking)."""
        if config.url is not None:
            return cls(config.url, config.token, config.ca_file, config.server_name)
        info = ensure_running(config.data_dir)
        return cls(info.url, info.token or None, None, None)

    @property
    def tls(self) -> bool:
        return self.url.startswith("grpcs://")

    def metadata(self, *, follow: bool = False) -> tuple[tuple[str, str], ...]:
        """Call metadata: the bearer token (when set) and the follow hint."""
        items: list[tuple[str, str]] = []
        if self.token:
            items.append(("authorization", f"Bearer {self.token}"))
        if follow:
            items.append(FOLLOW_METADATA)
        return tuple(items)

    def _options(self) -> list[tuple[str, int | str]]:
        options = list(CHANNEL_OPTIONS)
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def _credentials(self) -> grpc.ChannelCredentials:
        roots = None
        if self.ca_file:
            try:
                roots = Path(self.ca_file).read_bytes()
            except OSError as err:
                raise ValueError(
                    f"{CA_ENV}={self.ca_file!r} cannot be read: {err.strerror}"
                ) from None
        return grpc.ssl_channel_credentials(root_certificates=roots)

    def sync_channel(self) -> grpc.Channel:
        if self.tls:
            return grpc.secure_channel(target(self.url), self._credentials(), self._options())
        return grpc.insecure_channel(target(self.url), self._options())

    def aio_channel(self) -> grpc.aio.Channel:
        if self.tls:
            return grpc.aio.secure_channel(target(self.url), self._credentials(), self._options())
        return grpc.aio.insecure_channel(target(self.url), self._options())


def local_datastore(folder: str | Path | None = None) -> pb.Datastore:
    """FfDL's host-mount datastore for ``folder`` (default: the caller's working directory)."""
    path = os.getcwd() if folder is None else str(folder)
    return pb.Datastore(
        id=LOCAL_DATASTORE_ID,
        type="mount_volume",
        connection={"type": "host_mount", "name": "host-mount", "path": path},
        fields={"bucket": ""},
    )


def add_local_datastore(request: pb.CreateRequest, folder: str | Path | None = None) -> None:
    """When ``request`` names no datastore, give it :func:`local_datastore` for
    ``folder``, as its input unless it names one (FfDL requires a datastore)."""
    if not request.datastores:
        request.datastores.append(local_datastore(folder))
        if not request.training.input_data:
            request.training.input_data.append(LOCAL_DATASTORE_ID)


def prepare_create(request: pb.CreateRequest, user: str) -> pb.CreateRequest:
    """A copy of ``request`` with the caller's user and, when it names no
    datastore, the local one as input (FfDL requires both)."""
    prepared = pb.CreateRequest()
    prepared.CopyFrom(request)
    if not prepared.user_id:
        prepared.user_id = user
    add_local_datastore(prepared)
    return prepared


def page_query(
    training_id: str,
    user: str,
    *,
    pos: int = 0,
    pagesize: int = 0,
    since: str = "",
    subid: str = "",
) -> pb.Query:
    return pb.Query(
        searchType=pb.Query.TERM,
        meta=pb.MetaInfo(training_id=training_id, user_id=user, subid=subid),
        pos=pos,
        pagesize=pagesize,
        since=since,
    )


class DownloadFile:
    """A file written chunk by chunk beside ``dest`` and renamed into place only
    when complete, so ``dest`` never holds a partial download."""

    def __init__(self, dest: str | Path, default_name: str) -> None:
        dest = Path(dest).expanduser()
        self.dest = dest / default_name if dest.is_dir() else dest
        fd, temp = tempfile.mkstemp(
            dir=self.dest.parent, prefix=f".{self.dest.name}.", suffix=".part"
        )
        self._temp = Path(temp)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def __enter__(self) -> DownloadFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._file.close()
        if exc_type is None:
            os.replace(self._temp, self.dest)
        else:
            self._temp.unlink(missing_ok=True)
