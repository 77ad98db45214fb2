"""Jupyter server extension: the REST and WebSocket API over the Trainer client
that the JupyterLab side panel uses (see openapi.yaml)."""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from dlaas_jupyter.server_ext.app import DlaasExtension

    return [{"module": "dlaas_jupyter.server_ext", "app": DlaasExtension}]
