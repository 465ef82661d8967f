"""A real mosquitto for tests: TLS with a test CA, a password file and an ACL confining each unit."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.ports import free_port
from tests.procs import BIN, wait_for

PASSWORDS = {"unit-a": "pw-unit-a", "unit-b": "pw-unit-b", "cloud": "pw-cloud"}
ACL = """
user cloud
topic readwrite doorphone/v1/#
topic read homeassistant/#

pattern read doorphone/v1/%u/cmd/#
pattern write doorphone/v1/%u/evt/#
pattern readwrite doorphone/v1/%u/state
pattern write doorphone/v1/%u/reply/#
pattern readwrite doorphone/v1/%u/ha/#
pattern write homeassistant/+/%u/#
"""


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=doorphone test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))
    return {"ca": ca, "cert": cert, "key": key}


class Broker:
    def __init__(self, home: Path, certs: dict[str, Path]) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.certs = certs
        self.port = free_port()
        self.url = f"mqtts://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        passwd = home / "passwd"
        passwd.touch()
        for user, password in PASSWORDS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
        (home / "acl").write_text(ACL)
        (home / "data").mkdir(exist_ok=True)
        (home / "mosquitto.conf").write_text(f"""
user root
per_listener_settings false
allow_anonymous false
password_file {passwd}
acl_file {home / "acl"}
persistence true
persistence_location {home / "data"}/
autosave_interval 1
max_inflight_messages 0
max_queued_messages 200000
set_tcp_nodelay true
listener {self.port} 127.0.0.1
cafile {certs["ca"]}
certfile {certs["cert"]}
keyfile {certs["key"]}
""")

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.home / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=(self.home / "log").open("a"))
        wait_for(self._listening, timeout=10, what="mosquitto listening")

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def env(self, device: str) -> dict[str, str]:
        """What makes `doorphoned --sim` join this broker as ``device``."""
        return {"DOORPHONED_CLOUD_URL": self.url, "DOORPHONED_CLOUD_DEVICE_ID": device,
                "DOORPHONED_CLOUD_USERNAME": device, "DOORPHONED_CLOUD_PASSWORD": PASSWORDS[device],
                "DOORPHONED_CLOUD_CA_FILE": str(self.certs["ca"]), "DOORPHONED_CLOUD_RECONNECT_MAX": "3"}

    def tool_args(self, device: str, user: str = "cloud") -> list[str]:
        return ["--url", self.url, "--device", device, "--username", user, "--password", PASSWORDS[user],
                "--ca", str(self.certs["ca"])]


class Client:
    """A paho client for tests: records every message it receives."""

    def __init__(self, broker: Broker, user: str, client_id: str | None = None, persistent: bool = False) -> None:
        self.messages: list[tuple[str, bytes, Any]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.tls_set(ca_certs=str(broker.certs["ca"]))
        self.client.on_message = self._on_message
        self.client.on_socket_open = lambda c, u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.granted: list[Any] = []
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.granted.extend(codes)
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.connect("127.0.0.1", broker.port, 30, clean_start=not persistent, properties=props)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), message.properties))

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        time.sleep(0.3)

    def json_messages(self, prefix: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.startswith(prefix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def cloud_send(broker: Broker, device: str, name: str, args: dict[str, Any] | None = None, *extra: str,
               user: str = "cloud") -> tuple[int, Any, str]:
    """``doorphone-cloud send``: (exit status, the reply, stderr)."""
    result = subprocess.run([str(BIN / "doorphone-cloud"), *broker.tool_args(device, user), "send", name,
                             json.dumps(args or {}), "--compact", *extra], capture_output=True, text=True, timeout=30)
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else None), result.stderr


def cloud_tool(broker: Broker, device: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "doorphone-cloud"), *broker.tool_args(device), *args], capture_output=True,
                          text=True, timeout=120)
