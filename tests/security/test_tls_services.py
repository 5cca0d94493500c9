"""The whole chain on the production broker: `mamaroom device add` makes a
node's account and puts it in a room; the node connects over TLS with what
it printed; server and gateway log in with their own accounts over TLS; an
emergency call goes through and its call_ack comes back."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.security.broker import Client, ProductionBroker
from tests.support import ROOT, Proc, Services, wait_for, write_rooms_csv


def load_firmware_config() -> ModuleType:
    """firmware/config.py (plain Python that MicroPython also runs)."""
    spec = importlib.util.spec_from_file_location("fw_config", ROOT / "firmware" / "config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def device_add(
    svc: Services, broker: ProductionBroker, *args: str
) -> subprocess.CompletedProcess[str]:
    assert broker.proc is not None
    env = {**svc.env, "MAMAROOM_ADMIN_PASSWORD": svc.ADMIN_PASSWORD}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "device",
            "add",
            *args,
            "--passwd-file",
            str(broker.devices_passwd),
            "--server",
            svc.base_url,
            "--reload-command",
            f"kill -HUP {broker.proc.pid}",
            "--broker-host",
            "127.0.0.1",
            "--broker-port",
            str(broker.device_port),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_device_add_then_a_call_over_tls_end_to_end(tmp_path: Path) -> None:
    broker = ProductionBroker(tmp_path / "mosquitto").start()
    rooms = write_rooms_csv(tmp_path / "rooms.csv", [("T1-0101", None), ("T1-0201", "dev-b")])
    tls_url = f"mqtts://127.0.0.1:{broker.service_tls_port}"
    svc = Services(
        broker,
        tmp_path,
        rooms,
        MAMAROOM_MQTT__URL=tls_url,
        SSL_CERT_FILE=str(broker.ca),
        MAMAROOM_MQTT__USERNAME="mamaroom.server",
        MAMAROOM_MQTT__PASSWORD=broker.passwords["mamaroom.server"],
    )
    svc.gateway = Proc(
        "gateway",
        ["gateway"],
        {
            **svc.env,
            "MAMAROOM_MQTT__USERNAME": "mamaroom.gateway",
            "MAMAROOM_MQTT__PASSWORD": broker.passwords["mamaroom.gateway"],
        },
        tmp_path,
    )
    node: Client | None = None
    try:
        svc.start()
        # An unknown room: refused, and no account is made.
        bad = device_add(svc, broker, "dev-new", "--room", "NOPE")
        assert bad.returncode == 2 and "NOPE" in bad.stderr, bad.stderr
        assert "dev-new" not in broker.devices_passwd.read_text()
        out = device_add(svc, broker, "dev-new", "--room", "T1-0101")
        assert out.returncode == 0, out.stderr
        config = json.loads(out.stdout)
        # The firmware's own keys (firmware/config.py), so it can go into config.json as is.
        assert config["device"] == "dev-new" and config["ca"] == "ca.crt"
        assert config["broker"] == f"mqtts://127.0.0.1:{broker.device_port}"
        # Merged into the shipped example, the firmware's own validator takes it.
        fw_config = load_firmware_config()
        example = json.loads((ROOT / "firmware" / "config.example.json").read_text())
        cfg = fw_config.validate({**example, **config})
        assert (cfg["tls"], cfg["host"], cfg["port"]) == (True, "127.0.0.1", broker.device_port)
        assert len(config["password"]) >= 32
        # The hash, never the password, is in the file.
        assert config["password"] not in broker.devices_passwd.read_text()
        assert "dev-new:$7$" in broker.devices_passwd.read_text()
        assert svc.room("T1-0101")["device"] == "dev-new"
        # Again without --replace: refused, the password stays.
        again = device_add(svc, broker, "dev-new")
        assert again.returncode == 2 and "already" in again.stderr
        # Another room's device cannot be moved in by accident.
        taken = device_add(svc, broker, "dev-b", "--room", "T1-0101")
        assert taken.returncode == 2 and "already" in taken.stderr, taken.stderr

        node = Client(broker, "dev-new", config["password"])
        wait_for(
            lambda: not node.connect().is_failure,
            timeout=30,
            what="node connected",
            detail=broker.log_tail,
        )  # the reload may land a moment later
        node.subscribe("mr/v1/dev/dev-new/cmd")
        call = {
            "v": 1,
            "boot": 1,
            "seq": 1,
            "ts": int(time.time() * 1000),
            "action": "press",
            "call_id": "tls-1",
        }
        node.publish("mr/v1/dev/dev-new/call", json.dumps(call).encode())

        def acks() -> list[dict[str, Any]]:
            return [json.loads(p) for p in node.received("mr/v1/dev/dev-new/cmd")]

        wait_for(
            lambda: any(a.get("status") == "received" for a in acks()),
            timeout=30,
            what="call_ack received over TLS",
            detail=svc.logs,
        )
        [alert] = svc.admin("GET", "/api/alerts").json()
        assert alert["room"] == "T1-0101"
        # The gateway stored it, having logged in with its own account.
        wait_for(
            lambda: svc.metrics()['mamaroom_gateway_stored_total{kind="call"}'] >= 1,
            what="the call stored",
            detail=svc.logs,
        )
    finally:
        if node is not None:
            node.close()
        svc.stop()
        broker.stop()
