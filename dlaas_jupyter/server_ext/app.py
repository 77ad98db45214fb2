"""The Jupyter server extension: one Trainer client for the server, and the routes.

Where the Trainer is and who the user is resolve as everywhere else
(:meth:`TrainerConfig.resolve`: ``DLAAS_*`` variables win over this app's
traitlets), so the side panel sees the jobs the notebook's magics submit.
Without a Trainer URL, the embedded Trainer is started on the first call, in a
worker thread, not at server start.
"""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Unicode

from dlaas_jupyter import __version__
from dlaas_jupyter.client import AsyncTrainerClient, TrainerConfig
from dlaas_jupyter.server_ext import handlers, websockets

# Every route, relative to the server's base URL. The job-list socket comes
# before the {training_id} routes that would match it.
ROUTES = (*websockets.routes, *handlers.routes)


class DlaasExtension(ExtensionApp):
    """Train notebooks on an FfDL Trainer (or the embedded one) from JupyterLab."""

    name = "dlaas"
    version = __version__
    load_other_extensions = True

    trainer_url = Unicode(
        None, allow_none=True, config=True,
        help="grpc://host:port or grpcs://host:port of the Trainer (DLAAS_TRAINER_URL wins); "
        "unset: the embedded Trainer",
    )  # fmt: skip
    trainer_token = Unicode(
        None, allow_none=True, config=True,
        help="Bearer token for the Trainer (DLAAS_TRAINER_TOKEN wins)",
    )  # fmt: skip
    trainer_ca_file = Unicode(
        None, allow_none=True, config=True,
        help="CA certificate file for a grpcs:// Trainer (DLAAS_TRAINER_CA wins)",
    )  # fmt: skip
    trainer_server_name = Unicode(
        None, allow_none=True, config=True,
        help="TLS server name of the Trainer, e.g. dlaas.ibm.com (DLAAS_TRAINER_SERVER_NAME wins)",
    )  # fmt: skip
    user = Unicode(
        None, allow_none=True, config=True,
        help="user_id sent to the Trainer (DLAAS_USER wins; else JUPYTERHUB_USER, "
        "else the login name)",
    )  # fmt: skip
    trainer_data_dir = Unicode(
        None, allow_none=True, config=True,
        help="data directory of the embedded Trainer (DLAAS_DATA_DIR wins)",
    )  # fmt: skip
    poll_interval = Float(
        websockets.DEFAULT_POLL_INTERVAL, config=True,
        help="seconds between two looks at the Trainer for the WebSockets' status and job list",
    )  # fmt: skip

    def initialize_handlers(self) -> None:
        self.handlers.extend(ROUTES)

    def initialize_settings(self) -> None:
        try:
            config = TrainerConfig.resolve(
                url=self.trainer_url,
                token=self.trainer_token,
                ca_file=self.trainer_ca_file,
                server_name=self.trainer_server_name,
                user=self.user,
                data_dir=self.trainer_data_dir,
            )
        except ValueError as err:
            # The server still starts; the API answers 503 with this message.
            self.log.error("dlaas: the Trainer configuration is unusable: %s", err)
            self.settings["dlaas_config_error"] = f"the Trainer configuration is unusable: {err}"
            return
        client = AsyncTrainerClient(config)
        self.settings.update(
            dlaas_client=client,
            dlaas_job_list=websockets.JobListWatcher(client, self.poll_interval),
            dlaas_poll_interval=self.poll_interval,
        )
        self.log.info(
            "dlaas: Trainer %s, user %s", config.url or f"embedded ({config.data_dir})", config.user
        )

    async def stop_extension(self) -> None:
        watcher: websockets.JobListWatcher | None = self.settings.get("dlaas_job_list")
        if watcher is not None:
            await watcher.stop()
        client: AsyncTrainerClient | None = self.settings.get("dlaas_client")
        if client is not None:
            await client.close()
