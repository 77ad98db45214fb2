"""Where the Trainer is and who is asking: one resolution for kernel and server.

Every component resolves the same environment the same way, so the magics and
the side panel talk to the same Trainer as the same user and see the same jobs.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dlaas_jupyter.paths import DATA_DIR_ENV, default_data_dir

URL_ENV = "DLAAS_TRAINER_URL"
TOKEN_ENV = "DLAAS_TRAINER_TOKEN"
CA_ENV = "DLAAS_TRAINER_CA"
SERVER_NAME_ENV = "DLAAS_TRAINER_SERVER_NAME"
USER_ENV = "DLAAS_USER"
HUB_USER_ENV = "JUPYTERHUB_USER"

SCHEMES = ("grpc", "grpcs")


@dataclass(frozen=True)
class TrainerConfig:
    """A resolved Trainer configuration; ``url`` None means the embedded Trainer."""

    url: str | None
    token: str | None
    ca_file: str | None
    server_name: str | None
    user: str
    data_dir: Path

    @property
    def embedded(self) -> bool:
        return self.url is None

    @classmethod
    def resolve(
        cls,
        *,
        url: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        server_name: str | None = None,
        user: str | None = None,
        data_dir: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> TrainerConfig:
        """Combine arguments (e.g. traitlets config) with the environment.

        The environment wins where both give a value, so one exported variable
        redirects every component at once. Empty variables count as unset.
        """
        env = os.environ if environ is None else environ

        def pick(name: str, given: str | Path | None) -> str | None:
            value = env.get(name, "").strip()
            if not value and given is not None:
                value = str(given).strip()
            return value or None

        resolved_url = pick(URL_ENV, url)
        if resolved_url is not None:
            resolved_url = validate_url(resolved_url)
        resolved_ca = pick(CA_ENV, ca_file)
        resolved_server_name = pick(SERVER_NAME_ENV, server_name)
        if resolved_url is not None and not resolved_url.startswith("grpcs://"):
            for name, value in ((CA_ENV, resolved_ca), (SERVER_NAME_ENV, resolved_server_name)):
                if value is not None:
                    raise ValueError(
                        f"{name} is set ({value!r}) but {URL_ENV}={resolved_url!r} is not TLS; "
                        f"use a grpcs:// URL or unset {name}"
                    )
        if resolved_ca is not None:
            resolved_ca = str(Path(resolved_ca).expanduser())
            if not Path(resolved_ca).is_file():
                raise ValueError(f"{CA_ENV}={resolved_ca!r} is not a readable file")

        chosen_dir = pick(DATA_DIR_ENV, data_dir)
        resolved_user = pick(USER_ENV, user) or pick(HUB_USER_ENV, None) or _login_name()
        return cls(
            url=resolved_url,
            token=pick(TOKEN_ENV, token),
            ca_file=resolved_ca,
            server_name=resolved_server_name,
            user=resolved_user,
            data_dir=(
                Path(chosen_dir).expanduser() if chosen_dir else default_data_dir({})
            ).absolute(),
        )


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise ValueError(
            f"cannot tell who the user is (no login name for uid {os.getuid()}); set {USER_ENV}"
        ) from None


def validate_url(url: str) -> str:
    """Check ``url`` is ``grpc://host:port`` or ``grpcs://host:port``; return it normalised."""

    def bad(why: str) -> ValueError:
        return ValueError(
            f"{URL_ENV} must look like grpc://host:port or grpcs://host:port, got {url!r}: {why}"
        )

    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise bad(f"scheme must be grpc or grpcs, not {parts.scheme or 'missing'!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("no path, query or fragment allowed")
    if parts.username or parts.password:
        raise bad(f"put credentials in {TOKEN_ENV}, not in the URL")
    if not parts.hostname:
        raise bad("missing host")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port must be a number from 1 to 65535") from None
    if port is None:
        raise bad("missing port")
    if port == 0:
        raise bad("the port must be a number from 1 to 65535")
    return f"{parts.scheme}://{parts.netloc}"


def target(url: str) -> str:
    """The ``host:port`` gRPC dials for a validated URL."""
    return urlsplit(url).netloc
