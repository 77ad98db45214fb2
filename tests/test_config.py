"""TrainerConfig.resolve: environment over arguments, user fallbacks, URL checks."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from dlaas_jupyter.client.config import TrainerConfig


def test_arguments_alone() -> None:
    config = TrainerConfig.resolve(
        url="grpc://trainer.example:8443", token="t0k", user="ada", data_dir="/srv/d", environ={}
    )
    assert config.url == "grpc://trainer.example:8443"
    assert config.token == "t0k"
    assert config.user == "ada"
    assert config.data_dir == Path("/srv/d")
    assert not config.embedded


def test_environment_wins_over_arguments(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    env = {
        "DLAAS_TRAINER_URL": "grpcs://ffdl.example:443",
        "DLAAS_TRAINER_TOKEN": "from-env\n",
        "DLAAS_TRAINER_CA": str(ca),
        "DLAAS_TRAINER_SERVER_NAME": "dlaas.ibm.com",
        "DLAAS_USER": "grace",
        "JUPYTERHUB_USER": "hub-user",
        "DLAAS_DATA_DIR": str(tmp_path / "data"),
    }
    config = TrainerConfig.resolve(
        url="grpc://arg:1",
        token="arg",
        ca_file="/nope",
        server_name="arg.example",
        user="ada",
        data_dir="/arg",
        environ=env,
    )
    assert config == TrainerConfig(
        url="grpcs://ffdl.example:443",
        token="from-env",
        ca_file=str(ca),
        server_name="dlaas.ibm.com",
        user="grace",
        data_dir=tmp_path / "data",
    )


def test_empty_environment_values_count_as_unset() -> None:
    config = TrainerConfig.resolve(
        url="grpc://h:1", user="ada", environ={"DLAAS_TRAINER_URL": "", "DLAAS_USER": " "}
    )
    assert (config.url, config.user) == ("grpc://h:1", "ada")


def test_user_falls_back_to_jupyterhub_then_login_name() -> None:
    assert TrainerConfig.resolve(environ={"JUPYTERHUB_USER": "hubby"}).user == "hubby"
    # An explicit argument is the traitlets equivalent of DLAAS_USER.
    assert TrainerConfig.resolve(user="ada", environ={"JUPYTERHUB_USER": "hubby"}).user == "ada"
    assert TrainerConfig.resolve(environ={}).user == getpass.getuser()


def test_no_url_means_embedded_under_jupyter_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jdata"))
    config = TrainerConfig.resolve(environ={})
    assert config.embedded
    assert config.data_dir == tmp_path / "jdata" / "dlaas"


def test_relative_data_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded Trainer is started in its data dir: a relative path would move.
    monkeypatch.chdir(tmp_path)
    assert TrainerConfig.resolve(environ={"DLAAS_DATA_DIR": "d"}).data_dir == tmp_path / "d"


def test_url_is_normalised() -> None:
    assert TrainerConfig.resolve(url="grpc://h:50051/", environ={}).url == "grpc://h:50051"
    assert TrainerConfig.resolve(url="grpc://[::1]:50051", environ={}).url == "grpc://[::1]:50051"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://h:80", "scheme must be grpc or grpcs"),
        ("h:80", "scheme must be grpc or grpcs"),
        ("grpc://h", "missing port"),
        ("grpc://:80", "missing host"),
        ("grpc://h:port", "port must be a number"),
        ("grpc://h:0", "port must be a number"),
        ("grpc://h:70000", "port must be a number"),
        ("grpc://h:80/v2", "no path"),
        ("grpc://me:pw@h:80", "DLAAS_TRAINER_TOKEN"),
    ],
)
def test_bad_url_names_the_variable_and_value(url: str, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        TrainerConfig.resolve(environ={"DLAAS_TRAINER_URL": url})
    message = str(caught.value)
    assert "DLAAS_TRAINER_URL" in message
    assert repr(url) in message
    assert why in message


def test_tls_settings_need_a_grpcs_url() -> None:
    with pytest.raises(ValueError, match=r"DLAAS_TRAINER_SERVER_NAME.*grpcs://"):
        TrainerConfig.resolve(url="grpc://h:1", server_name="dlaas.ibm.com", environ={})


def test_missing_ca_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent.pem"
    with pytest.raises(ValueError, match=r"DLAAS_TRAINER_CA.*absent\.pem"):
        TrainerConfig.resolve(
            environ={"DLAAS_TRAINER_URL": "grpcs://h:1", "DLAAS_TRAINER_CA": str(missing)}
        )
