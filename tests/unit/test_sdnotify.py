from __future__ import annotations

import os
import socket

from doorphoned.core.sdnotify import Notifier


def test_messages_reach_the_notify_socket(tmp_path):
    path = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    n = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "20000000"})
    assert n.watchdog_interval == 10
    n.ready("2 doors")
    assert server.recv(1024).decode().split("\n")[:2] == ["READY=1", "STATUS=2 doors"]
    n.watchdog()
    assert server.recv(1024) == b"WATCHDOG=1"
    n.stopping()
    assert server.recv(1024).startswith(b"STOPPING=1")
    n.close()


def test_abstract_socket_address():
    name = f"doorphoned-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2)
    Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
    assert server.recv(1024) == b"STATUS=hello"


def test_without_systemd_everything_is_a_no_op():
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    n.ready("x")  # must not raise


def test_watchdog_for_another_pid_is_ignored():
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval is None
