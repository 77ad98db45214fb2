"""``dlaas-trainer serve|status|stop``: run and manage the embedded Trainer."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

from dlaas_jupyter.paths import default_data_dir, is_running, read_info
from dlaas_jupyter.trainer.unzip import ZipLimits


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlaas-trainer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the Trainer in the foreground")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    serve.add_argument("--no-auth", action="store_true", help="accept calls without the token")
    serve.add_argument("--backend", default="local", help="what runs learners (default: local)")
    serve.add_argument("--cpus", type=float, help="CPUs jobs may use (default: all)")
    serve.add_argument("--gpus", type=int, help="GPUs jobs may use (default: detected)")
    limits = ZipLimits()
    serve.add_argument("--max-zip-files", type=int, default=limits.max_files,
                       help=f"most entries a model zip may have (default {limits.max_files})")
    serve.add_argument("--max-zip-bytes", type=int, default=limits.max_bytes,
                       help=f"most bytes a model zip may unpack to (default {limits.max_bytes})")
    for command in (serve, commands.add_parser("status", help="is a Trainer running here?"),
                    commands.add_parser("stop", help="stop the running Trainer")):
        command.add_argument("--data-dir", type=Path, help="state folder (default: $DLAAS_DATA_DIR or the Jupyter data dir)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    if args.command == "serve":
        from dlaas_jupyter.trainer.server import AlreadyRunning, ServeOptions, serve

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        options = ServeOptions(
            data_dir=data_dir, host=args.host, port=args.port, auth=not args.no_auth,
            backend=args.backend, cpus=args.cpus, gpus=args.gpus,
            zip_limits=ZipLimits(max_files=args.max_zip_files, max_bytes=args.max_zip_bytes),
        )
        try:
            asyncio.run(serve(options))
        except AlreadyRunning as exc:
            print(f"dlaas-trainer: {exc}", file=sys.stderr)
            return 1
        return 0
    info = read_info(data_dir)
    if args.command == "status":
        if info is None:
            print(f"no Trainer is running for {data_dir}")
            return 3
        print(f"Trainer running at {info.url} (pid {info.pid}), data in {data_dir}")
        return 0
    if info is None:
        print(f"no Trainer is running for {data_dir}")
        return 0
    pid = info.pid
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not is_running(pid):
            print(f"stopped the Trainer (pid {pid})")
            return 0
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    print(f"the Trainer (pid {pid}) did not stop within 30 s and was killed", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
