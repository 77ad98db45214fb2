"""The server extension's REST API, in a real Jupyter server, over the session's
real embedded Trainer (tests/conftest.py), with real jobs.

pytest-jupyter's fixtures are imported into this module (and test_server_ws.py)
rather than registered as a plugin: as a plugin its autouse fixtures (a server
cleanup, an event loop it closes) and its coroutine-test hooks would apply to
every test of the suite. Its loop fixture is replaced by pytest-asyncio's loop,
so the server and the test run on one loop.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from conftest import SMALL_CPUS, closed_port_url, job_request
from pytest_jupyter.jupyter_server import *  # noqa: F403 - the fixtures; see the module doc
from tornado.httpclient import HTTPResponse
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from traitlets.config import Config

import dlaas_jupyter
from benchmarks.kernel import write_notebook
from dlaas_jupyter.client import AsyncTrainerClient, TrainerConfig
from dlaas_jupyter.paths import INFO_FILE
from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.server_ext import handlers, websockets
from dlaas_jupyter.server_ext.app import ROUTES, DlaasExtension

ROOT = Path(__file__).resolve().parent.parent
OPENAPI = ROOT / "dlaas_jupyter" / "server_ext" / "openapi.yaml"
TERMINAL = {"COMPLETED", "FAILED", "HALTED"}
LOSS_REGEX = "step %{INT:step} loss %{FLOAT:loss}"


# -- fixtures (test_server_ws.py imports them) --------------------------------------


@pytest.fixture
async def jp_asyncio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """pytest-asyncio's loop for this test, instead of pytest-jupyter's own."""
    yield asyncio.get_running_loop()


@pytest.fixture
def trainer_url(trainer) -> str:
    """Where the server's extension finds the Trainer; a test may point it elsewhere."""
    return trainer.url


@pytest.fixture
def jp_server_config(trainer, trainer_url: str, user: str, monkeypatch, tmp_path: Path) -> Config:
    """The extension enabled, configured as users do: by the DLAAS_* variables
    (no URL: an embedded Trainer of the test's own)."""
    monkeypatch.setenv("DLAAS_TRAINER_URL", trainer_url)
    monkeypatch.setenv("DLAAS_DATA_DIR", str(tmp_path / "embedded"))
    monkeypatch.setenv("DLAAS_TRAINER_TOKEN", trainer.token)
    monkeypatch.setenv("DLAAS_USER", user)
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"dlaas_jupyter": True}},
            "DlaasExtension": {"poll_interval": 0.2},
        }
    )


class Api:
    """The extension's REST API through jp_fetch: (status, decoded body), never raising."""

    def __init__(self, fetch: Callable[..., Any]) -> None:
        self.fetch = fetch

    async def raw(self, method: str, path: str, body: Any = None, **kwargs: Any) -> HTTPResponse:
        if body is not None and not isinstance(body, str):
            body = json.dumps(body)
        if body is None and method in ("POST", "PUT"):
            body = ""
        return await self.fetch(
            "dlaas", "api", *path.split("/"), method=method, body=body, raise_error=False, **kwargs
        )

    async def call(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        response = await self.raw(method, path, body, **kwargs)
        if (
            response.headers.get("Content-Type", "").startswith("application/json")
            and response.body
        ):
            return response.code, json.loads(response.body)
        return response.code, response.body

    async def get(self, path: str, **kwargs: Any) -> Any:
        code, body = await self.call("GET", path, **kwargs)
        assert code == 200, (path, code, body)
        return body

    async def wait(
        self, training_id: str, until: set[str] = TERMINAL, timeout: float = 120
    ) -> dict:
        """The job once its status is one of ``until``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = await self.get(f"jobs/{training_id}")
            if job["status"] in until:
                return job
            assert loop.time() < deadline, f"{training_id} still {job['status']}"
            await asyncio.sleep(0.1)


@pytest.fixture
def api(jp_fetch) -> Api:
    return Api(jp_fetch)


# -- the extension is there ---------------------------------------------------------


def test_installing_the_package_enables_the_extension() -> None:
    config = json.loads(
        (ROOT / "jupyter-config/jupyter_server_config.d/dlaas_jupyter.json").read_text()
    )
    assert config == {"ServerApp": {"jpserver_extensions": {"dlaas_jupyter": True}}}
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert (
        '"jupyter-config/jupyter_server_config.d/dlaas_jupyter.json" = '
        '"etc/jupyter/jupyter_server_config.d/dlaas_jupyter.json"'
    ) in pyproject
    [point] = dlaas_jupyter._jupyter_server_extension_points()
    assert point["app"] is DlaasExtension and DlaasExtension.name == "dlaas"


async def test_health_names_the_trainer_and_the_user(api: Api, trainer, user: str) -> None:
    assert await api.get("health") == {"reachable": True, "trainer": trainer.url, "user": user}


@pytest.mark.parametrize("trainer_url", [""])
async def test_without_a_url_the_embedded_trainer_starts_on_first_use_off_the_loop(
    api: Api, user: str
) -> None:
    data_dir = Path(os.environ["DLAAS_DATA_DIR"])
    assert not data_dir.exists()  # not started with the server
    loop = asyncio.get_running_loop()
    try:
        started = last = loop.time()
        health = asyncio.ensure_future(api.get("health"))
        longest_stall = 0.0
        while not health.done():  # the loop keeps turning while the Trainer starts
            await asyncio.sleep(0.01)
            longest_stall, last = max(longest_stall, loop.time() - last), loop.time()
        assert await health == {"reachable": True, "trainer": "embedded", "user": user}
        assert (data_dir / INFO_FILE).exists()
        # Started on the loop, the start would be one long stall.
        assert longest_stall < (last - started) / 3
    finally:
        stop = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dlaas_jupyter.trainer", "stop", "--data-dir", str(data_dir),
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await stop.wait()


async def test_versions(api: Api) -> None:
    frameworks = (await api.get("versions"))["frameworks"]
    assert frameworks and all(
        isinstance(v["version"], str) and isinstance(v["external"], bool)
        for versions in frameworks.values()
        for v in versions
    )


# -- jobs through the API -----------------------------------------------------------


async def test_submit_a_notebook_then_read_everything_back(
    api: Api, jp_root_dir: Path, user: str
) -> None:
    (jp_root_dir / "work").mkdir()
    write_notebook(
        jp_root_dir / "work" / "train.ipynb",
        [
            "import math",
            "for step in range(1, 6):\n    print(f'step {step} loss {1 / step}', flush=True)",
        ],
    )
    code, submitted = await api.call(
        "POST",
        "jobs",
        {
            "path": "work/train.ipynb",
            "cpus": SMALL_CPUS,
            "metric_regex": LOSS_REGEX,
            "description": "d",
        },
    )
    assert code == 201, submitted
    training_id = submitted["training_id"]
    assert submitted["name"] == "train" and isinstance(submitted["notes"], list)

    job = await api.wait(training_id)
    assert job["status"] == "COMPLETED", job
    assert job["user_id"] == user and job["name"] == "train" and job["description"] == "d"
    assert job["resources"]["cpus"] == SMALL_CPUS and job["command"] == "python main.py"
    stamps = job["timestamps"]
    assert stamps["submission"] <= stamps["process_start"] <= stamps["completion"]

    listed = (await api.get("jobs"))["jobs"]
    assert [j["training_id"] for j in listed] == [training_id] and listed[0] == job

    lines = (await api.get(f"jobs/{training_id}/logs", params={"pagesize": "100"}))["lines"]
    steps = [line["line"] for line in lines if line["line"].startswith("step ")]
    assert steps == [f"step {n} loss {1 / n}" for n in range(1, 6)]
    assert [line["rindex"] for line in lines] == list(range(1, len(lines) + 1))
    page = (await api.get(f"jobs/{training_id}/logs", params={"pos": "2", "pagesize": "1"}))[
        "lines"
    ]
    assert [line["rindex"] for line in page] == [2]
    last = (await api.get(f"jobs/{training_id}/logs", params={"pos": "-1", "pagesize": "1"}))[
        "lines"
    ]
    assert last == lines[-1:]

    records = (await api.get(f"jobs/{training_id}/metrics", params={"pagesize": "100"}))["records"]
    assert [(r["group"], r["etimes"]["step"], r["values"]["loss"]) for r in records] == [
        ("train", n, pytest.approx(1 / n)) for n in range(1, 6)
    ]

    response = await api.raw("GET", f"jobs/{training_id}/definition")
    assert response.code == 200 and response.headers["Content-Type"] == "application/zip"
    assert (
        response.headers["Content-Disposition"]
        == f'attachment; filename="{training_id}-definition.zip"'
    )
    with zipfile.ZipFile(io.BytesIO(response.body)) as definition:
        assert (
            "print(f'step {step} loss {1 / step}', flush=True)"
            in definition.read("main.py").decode()
        )

    response = await api.raw("GET", f"jobs/{training_id}/model")
    assert response.code == 200
    assert (
        response.headers["Content-Disposition"]
        == f'attachment; filename="{training_id}-trainedmodel.zip"'
    )
    with zipfile.ZipFile(io.BytesIO(response.body)) as model:
        log = next(name for name in model.namelist() if name.endswith("training-log.txt"))
        assert "step 5 loss 0.2" in model.read(log).decode()


async def test_jobs_are_listed_newest_first(api: Api, aclient) -> None:
    ids = []
    for n in range(3):
        ids.append(await aclient.create(job_request("true", name=f"job-{n}", cpus=SMALL_CPUS)))
        await asyncio.sleep(0.01)  # submission times are milliseconds
    listed = (await api.get("jobs"))["jobs"]
    assert [job["training_id"] for job in listed] == ids[::-1]
    assert [job["name"] for job in listed] == ["job-2", "job-1", "job-0"]


async def test_halt_keeps_the_job_and_delete_removes_it(api: Api, aclient) -> None:
    training_id = await aclient.create(job_request("echo started; sleep 600", cpus=SMALL_CPUS))
    await api.wait(training_id, {"PROCESSING"})
    code, halted = await api.call("POST", f"jobs/{training_id}/halt")
    assert (code, halted) == (200, {"training_id": training_id, "status": "HALTED"})
    job = await api.get(f"jobs/{training_id}")
    assert job["status"] == "HALTED" and job["terminal"]
    code, halted = await api.call("POST", f"jobs/{training_id}/halt")  # halting again: a no-op
    assert (code, halted["status"]) == (200, "HALTED")

    code, body = await api.call("DELETE", f"jobs/{training_id}")
    assert (code, body) == (204, b"")
    code, body = await api.call("GET", f"jobs/{training_id}")
    assert code == 404 and training_id in body["message"]
    assert (await api.get("jobs"))["jobs"] == []


# -- errors -------------------------------------------------------------------------

JOB_ROUTES = [
    ("GET", ""),
    ("DELETE", ""),
    ("POST", "/halt"),
    ("GET", "/logs"),
    ("GET", "/metrics"),
    ("GET", "/model"),
    ("GET", "/definition"),
]


async def test_unknown_job_is_404_everywhere(api: Api) -> None:
    for method, suffix in JOB_ROUTES:
        code, body = await api.call(method, f"jobs/training-nosuchjob{suffix}")
        assert code == 404, (method, suffix, code, body)
        assert "training-nosuchjob" in body["message"] and "not found" in body["message"]


async def test_another_users_job_is_403_everywhere(api: Api, trainer, user: str) -> None:
    config = TrainerConfig.resolve(
        url=trainer.url, token=trainer.token, user=f"{user}-other", environ={}
    )
    async with AsyncTrainerClient(config) as other:
        foreign = await other.create(job_request("sleep 600", cpus=SMALL_CPUS))
        for method, suffix in JOB_ROUTES:
            code, body = await api.call(method, f"jobs/{foreign}{suffix}")
            assert code == 403, (method, suffix, code, body)
            assert "not allowed" in body["message"]
        assert (await api.get("jobs"))["jobs"] == []
        assert await other.status(foreign) != pb.HALTED  # neither halted nor deleted
        await other.delete(foreign)


async def test_a_job_without_results_to_download_is_409(api: Api, aclient) -> None:
    request = job_request("true", cpus=SMALL_CPUS)
    request.datastores.append(
        pb.Datastore(
            id="s3",
            type="s3_datastore",
            connection={"auth_url": "http://objects"},
            fields={"bucket": "b"},
        )
    )
    request.training.input_data.append("s3")
    training_id = await aclient.create(request)
    assert (await api.wait(training_id))["status"] == "FAILED"
    code, body = await api.call("GET", f"jobs/{training_id}/model")
    assert code == 409 and "no results folder" in body["message"]


@pytest.mark.parametrize("trainer_url", [closed_port_url()])
async def test_a_trainer_that_is_down_is_502(api: Api, trainer_url: str) -> None:
    health = await api.get("health")
    assert health["reachable"] is False and health["trainer"] == trainer_url
    assert "unreachable" in health["error"]
    for method, path in [
        ("GET", "jobs"),
        ("GET", "versions"),
        ("GET", "jobs/training-x"),
        ("POST", "jobs/training-x/halt"),
        ("GET", "jobs/training-x/model"),
    ]:
        code, body = await api.call(method, path)
        assert code == 502, (method, path, code, body)
        assert trainer_url.removeprefix("grpc://") in body["message"]


@pytest.mark.parametrize("trainer_url", ["http://127.0.0.1:1"])
async def test_an_unusable_configuration_is_503_with_the_reason(api: Api) -> None:
    health = await api.get("health")
    assert health["reachable"] is False and "DLAAS_TRAINER_URL" in health["error"]
    code, body = await api.call("GET", "jobs")
    assert code == 503 and "scheme must be grpc or grpcs" in body["message"]


async def test_submission_errors_name_the_problem(
    api: Api, jp_root_dir: Path, tmp_path: Path
) -> None:
    write_notebook(jp_root_dir / "nb.ipynb", ["print('hi')"])
    outside = write_notebook(tmp_path / "outside.ipynb", ["print('outside')"])
    (jp_root_dir / "link.ipynb").symlink_to(outside)
    (jp_root_dir / "folder").mkdir()
    (jp_root_dir / "bad.yml").write_text("name: x\nframwork: {name: python}\n")
    (jp_root_dir / "broken.ipynb").write_text("{not json")
    cases: list[tuple[Any, int, str]] = [
        ({"path": "../outside.ipynb"}, 403, "outside the server's root"),
        ({"path": "link.ipynb"}, 403, "outside the server's root"),
        ({"path": "missing.ipynb"}, 404, "'missing.ipynb' not found"),
        ({"path": "folder"}, 400, "not a file"),
        ({"path": "broken.ipynb"}, 400, "cannot read notebook"),
        ({"path": "nb.ipynb", "manifest": "../../etc/passwd"}, 403, "manifest path"),
        ({"path": "nb.ipynb", "manifest": "none.yml"}, 404, "manifest 'none.yml' not found"),
        ({"path": "nb.ipynb", "manifest": "bad.yml"}, 400, "framwork"),
        ({"path": "nb.ipynb", "cpus": "two"}, 400, "'cpus' must be an integer or a number"),
        ({"path": "nb.ipynb", "learners": 0}, 400, "--learners 0"),
        ({"path": "nb.ipynb", "learners": True}, 400, "'learners' must be an integer"),
        ({"path": "nb.ipynb", "memory": "lots"}, 400, "--memory"),
        ({"path": "nb.ipynb", "metrics": "regex"}, 400, "--metric-regex"),
        (
            {"path": "nb.ipynb", "metric_regex": [1]},
            400,
            "'metric_regex' must be a string or a list",
        ),
        ({"path": "nb.ipynb", "gpu": 1}, 400, "unknown field(s) gpu"),
        ({"name": "x"}, 400, "'path' must name the notebook"),
        ([1, 2], 400, "JSON object"),
        ("{not json", 400, "Invalid JSON"),
    ]
    for body, status, message in cases:
        code, reply = await api.call("POST", "jobs", body)
        assert (code, message in reply.get("message", "")) == (status, True), (body, code, reply)
    assert (await api.get("jobs"))["jobs"] == []


async def test_page_arguments_are_checked(api: Api, aclient) -> None:
    training_id = await aclient.create(job_request("true", cpus=SMALL_CPUS))
    for params, message in [
        ({"pos": "first"}, "pos='first' is not a whole number"),
        ({"pagesize": "-1"}, "pagesize=-1 must be at least 0"),
        ({"since": "yesterday"}, "since='yesterday' must be milliseconds"),
    ]:
        for kind in ("logs", "metrics"):
            code, body = await api.call("GET", f"jobs/{training_id}/{kind}", params=params)
            assert (code, message in body["message"]) == (400, True), (kind, params, body)


async def test_other_http_errors_are_json_too(api: Api) -> None:
    assert await api.call("PUT", "jobs", {}) == (405, {"message": "Method Not Allowed"})


# -- authentication -----------------------------------------------------------------

ALL_ROUTES = [
    ("GET", "health"),
    ("GET", "versions"),
    ("GET", "jobs"),
    ("POST", "jobs"),
    *[(method, f"jobs/training-x{suffix}") for method, suffix in JOB_ROUTES],
]


async def test_requests_without_credentials_are_refused(api: Api) -> None:
    for method, path in ALL_ROUTES:
        for headers in ({"Authorization": ""}, {"Authorization": "token wrong"}):
            code, _ = await api.call(
                method, path, {} if method == "POST" else None, headers=headers
            )
            assert code in (401, 403), (method, path, headers, code)


async def test_with_the_login_cookie_post_and_delete_need_the_xsrf_token(
    api: Api, jp_serverapp, aclient
) -> None:
    token = jp_serverapp.identity_provider.token
    login = await api.raw("GET", "health", params={"token": token}, headers={"Authorization": ""})
    [cookie] = [
        c.split(";")[0] for c in login.headers.get_list("Set-Cookie") if c.startswith("username-")
    ]
    by_cookie = {"Authorization": "", "Cookie": cookie}
    assert (await api.call("GET", "jobs", headers=by_cookie))[0] == 200

    training_id = await aclient.create(job_request("sleep 600", cpus=SMALL_CPUS))
    for method, path in [
        ("POST", f"jobs/{training_id}/halt"),
        ("DELETE", f"jobs/{training_id}"),
        ("POST", "jobs"),
    ]:
        code, body = await api.call(
            method, path, {"path": "x.ipynb"} if path == "jobs" else None, headers=by_cookie
        )
        assert code == 403 and "_xsrf" in body["message"], (method, path, code, body)
    assert (await api.get(f"jobs/{training_id}"))["status"] != "HALTED"

    with_xsrf = {**by_cookie, "Cookie": f"{cookie}; _xsrf=c0ffee", "X-XSRFToken": "c0ffee"}
    code, body = await api.call("POST", f"jobs/{training_id}/halt", headers=with_xsrf)
    assert (code, body["status"]) == (200, "HALTED")
    assert (await api.call("DELETE", f"jobs/{training_id}", headers=with_xsrf))[0] == 204


# -- streamed downloads -------------------------------------------------------------


@pytest.mark.slow
async def test_a_200_mb_result_downloads_with_flat_server_memory(
    api: Api, aclient, tmp_path: Path, jp_http_port: int, jp_base_url: str, jp_auth_header: dict
) -> None:
    size = 200 * 2**20
    write = (
        "import os; f = open(os.path.join(os.environ['RESULT_DIR'], 'big.bin'), 'wb'); "
        f"[f.write(os.urandom(1 << 20)) for _ in range({size >> 20})]; f.close()"
    )
    training_id = await aclient.create(job_request(f'python -c "{write}"', cpus=SMALL_CPUS))
    assert (await api.wait(training_id))["status"] == "COMPLETED"

    # jp_fetch's client refuses bodies over 100 MB; this one reads any size.
    http = SimpleAsyncHTTPClient(force_instance=True, max_body_size=2 * size)
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}dlaas/api/jobs/{training_id}/model"
    server = psutil.Process()  # the Jupyter server runs in this process
    baseline = peak = server.memory_info().rss
    received = 0
    target = tmp_path / "model.zip"
    with target.open("wb") as out:

        def on_chunk(chunk: bytes) -> None:
            nonlocal received, peak
            out.write(chunk)
            received += len(chunk)
            peak = max(peak, server.memory_info().rss)

        try:
            response = await http.fetch(
                url, headers=jp_auth_header, streaming_callback=on_chunk, request_timeout=300
            )
        finally:
            http.close()
    assert response.code == 200 and received > size
    assert peak - baseline < 64 * 2**20, f"RSS grew by {(peak - baseline) / 2**20:.0f} MiB"
    with zipfile.ZipFile(target) as model:
        [big] = [info for info in model.infolist() if info.filename.endswith("big.bin")]
        assert big.file_size == size


# -- the API description ------------------------------------------------------------


def openapi_path(pattern: str) -> str:
    """A route regex as the OpenAPI path template: named groups become {name}."""
    return "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)


def test_openapi_describes_every_route() -> None:
    spec = yaml.safe_load(OPENAPI.read_text())
    assert spec["openapi"].startswith("3.")
    routes = {openapi_path(pattern): handler for pattern, handler in ROUTES}
    assert set(routes) == set(spec["paths"])
    assert len(routes) == len(handlers.routes) + len(websockets.routes)
    for path, handler in routes.items():
        described = {method for method in spec["paths"][path] if method != "parameters"}
        implemented = {"get", "post", "put", "patch", "delete"} & methods_of(handler)
        assert described == implemented, (path, described, implemented)
    text = OPENAPI.read_text()
    for ref in set(re.findall(r'\$ref: "#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in spec["components"][ref[0]], ref


def methods_of(handler: type) -> set[str]:
    """Names the handler class and its bases in this package define (not Jupyter's)."""
    return {
        name
        for klass in handler.__mro__
        if klass.__module__.startswith("dlaas_jupyter.")
        for name in vars(klass)
    }


def test_openapi_is_valid_openapi_3() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(yaml.safe_load(OPENAPI.read_text()))


__all__ = ["Api", "api", "jp_asyncio_loop", "jp_server_config", "trainer_url"]
