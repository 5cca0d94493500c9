"""One config model: TOML file, environment overrides, one clear line on error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel

from cli.main import app as cli_app
from mamaroom.config import PROJECT_ROOT, ConfigError, Settings, load_settings


def test_defaults_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883"
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8000)
    assert settings.timezone == "Asia/Shanghai"
    assert settings.gateway.supervision_s == 150
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        'timezone = "Asia/Urumqi"\n[http]\nport = 8100\n[mqtt]\n'
        'url = "mqtts://broker.park.example:8884"\n'
    )
    monkeypatch.setenv("MAMAROOM_CONFIG", str(cfg))
    monkeypatch.setenv("MAMAROOM_HTTP__PORT", "8200")  # environment beats the file
    settings = load_settings()
    assert settings.http.port == 8200
    assert settings.timezone == "Asia/Urumqi"
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.tls) == (
        "broker.park.example",
        8884,
        True,
    )


@pytest.mark.parametrize(
    "env, key",
    [
        ({"MAMAROOM_HTTP__PORT": "eighty"}, "http.port"),
        ({"MAMAROOM_HTTP__PORT": "70000"}, "http.port"),
        ({"MAMAROOM_MQTT__URL": "http://broker"}, "mqtt.url"),
        ({"MAMAROOM_TIMEZONE": "Mars/Olympus"}, "timezone"),
        ({"MAMAROOM_GATEWAY__SUPERVISION_S": "-5"}, "gateway.supervision_s"),
        ({"MAMAROOM_LOG__LEVEL": "chatty"}, "log.level"),
        # Settings that would mean nobody is paged or nothing goes offline.
        ({"MAMAROOM_GATEWAY__SUPERVISION_S": "inf"}, "gateway.supervision_s"),
        ({"MAMAROOM_GATEWAY__SUPERVISION_S": "1e12"}, "gateway.supervision_s"),
        ({"MAMAROOM_ALERTS__DEVICE_OFFLINE_AFTER_S": "nan"}, "alerts.device_offline_after_s"),
        ({"MAMAROOM_ESCALATION__TIERS": "[]"}, "escalation.tiers"),
        (
            {"MAMAROOM_ESCALATION__TIERS": '[{"after_s": 1e308, "pagers": ["1"]}]'},
            "escalation.tiers.0.after_s",
        ),
        (
            {"MAMAROOM_ESCALATION__TIERS": '[{"repeat_s": "Infinity", "pagers": ["1"]}]'},
            "escalation.tiers.0.repeat_s",
        ),
        # WeChat: a placeholder secret, or an AppID without what it needs.
        (
            {
                "MAMAROOM_WECHAT__APP_ID": "wx1",
                "MAMAROOM_WECHAT__SECRET": "changeme",
                "MAMAROOM_WECHAT__TEMPLATE_ID": "T1",
            },
            "wechat.secret",
        ),
        ({"MAMAROOM_WECHAT__APP_ID": "wx1"}, "wechat"),
        ({"MAMAROOM_WECHAT__API_BASE_URL": "api.weixin.qq.com"}, "wechat.api_base_url"),
        ({"MAMAROOM_WECHAT__TEMPLATE_DATA": '{"thing1": "{openid}"}'}, "wechat.template_data"),
    ],
)
def test_bad_config_names_the_key(
    env: dict[str, str], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(f"config error: {key} ")
    assert "\n" not in str(err.value)


def test_unknown_key_and_broken_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text("[http]\nprot = 8000\n")
    monkeypatch.setenv("MAMAROOM_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"http\.prot"):
        load_settings()
    cfg.write_text("[http\n")
    with pytest.raises(ConfigError, match="MAMAROOM_CONFIG"):
        load_settings()
    monkeypatch.setenv("MAMAROOM_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()


def test_a_service_refuses_to_start_with_one_clear_line() -> None:
    env = {**os.environ, "MAMAROOM_HTTP__PORT": "eighty"}
    out = subprocess.run(
        [sys.executable, "-m", "cli", "server"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "http.port" in lines[0] and "MAMAROOM_HTTP__PORT" in lines[0]


def test_a_server_that_could_page_nobody_refuses_to_start(tmp_path: Path) -> None:
    """The defaults page the duty roster, which is empty: the server says so
    in one line and exits 2, unless paging.allow_no_target is set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMAROOM_")}
    env["MAMAROOM_DATA_DIR"] = str(tmp_path / "data")
    out = subprocess.run(
        [sys.executable, "-m", "cli", "server"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert "no escalation tier can page anyone" in line and "paging.allow_no_target" in line


def _commands(group: Any, path: list[str]) -> list[list[str]]:
    out = [path]
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a group (typer's own, or click's)
            out += _commands(cmd, [*path, name])
        else:
            out.append([*path, name])
    return out


def test_every_command_has_help() -> None:
    # Every command the CLI has, found in it, so a new one cannot be missed.
    group = typer.main.get_command(cli_app)
    commands = _commands(group, [])
    assert ["device", "add"] in commands and ["watchdog"] in commands
    for cmd in commands:
        out = subprocess.run(
            [sys.executable, "-m", "cli", *cmd, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "Usage" in out.stdout and len(out.stdout) > 200, cmd


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            out += _keys(type(default), f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_the_docs_and_the_example_name_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = _keys(Settings)
    assert len(keys) > 40
    doc = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    assert [k for k in keys if f"`{k}`" not in doc] == []
    example = PROJECT_ROOT / "site" / "mamaroom.example.toml"
    monkeypatch.setenv("MAMAROOM_CONFIG", str(example))
    assert load_settings().model_dump() == Settings().model_dump() | {
        "rooms_csv": Path("site/rooms.csv")
    }


def test_config_show_hides_secrets_and_errors_keep_their_brackets(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        '[paging.im.destinations]\nwecom = "wecom://s3cr3t-key"\n'
        '[mqtt]\npassword = "hunter22"\n'
        '[pages]\nvapid_private_key = "vapid-pr1vate"\n'
        '[storage.influxdb]\ntoken = "t0ken-x"\n'
        '[wechat]\napp_id = "wx123"\nsecret = "wx-s3cr3t-9"\ntemplate_id = "T1"\n'
    )
    env = {**os.environ, "MAMAROOM_CONFIG": str(cfg)}
    shown = subprocess.run(
        [sys.executable, "-m", "cli", "config", "show"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    for secret in ("s3cr3t", "hunter22", "vapid-pr1vate", "t0ken-x", "wx-s3cr3t-9"):
        assert secret not in shown.stdout
    assert "wecom://***" in shown.stdout
    # Brackets in an error message reach the reader whole (rich markup off).
    env["MAMAROOM_MQTT__URL"] = "ftp://[broker]"
    bad = subprocess.run(
        [sys.executable, "-m", "cli", "config", "show"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "[broker]" in bad.stderr, bad.stderr


@pytest.mark.parametrize("name", ["MAMAROOM_TIMEZON", "MAMAROOM_HTTP__PROT", "MAMAROOM_NOPE__X"])
def test_a_misspelt_environment_variable_is_an_error(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError, match=f"{name}: no such setting"):
        load_settings()


def test_mapping_keys_in_the_environment_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMAROOM_PAGING__IM__DESTINATIONS__WECOM", "wecom://key")
    assert load_settings().paging.im.destinations == {"wecom": "wecom://key"}
