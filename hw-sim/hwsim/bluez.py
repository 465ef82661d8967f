# dbus-next reads D-Bus signatures from string annotations ("s", "a{qv}") and names members as D-Bus does:
# mypy: disable-error-code="untyped-decorator,no-untyped-call,no-untyped-def,valid-type,name-defined"
# ruff: noqa: F722, F821, N802, ANN201
"""A private system bus with a fake ``org.bluez``: what bleak's BlueZ backend scans, unchanged.

hw-sim starts ``dbus-daemon`` (type system, a unix socket beside hw-sim's own, EXTERNAL auth, allow-all policy)
and owns ``org.bluez`` on it with dbus-next: an adapter ``/org/bluez/hci0`` (``org.bluez.Adapter1``: powered,
central role, discovery methods) and one ``org.bluez.Device1`` per advertising phone, whose ``RSSI`` and
``ManufacturerData`` change as the phone advertises. bleak learns of them by ``InterfacesAdded`` and
``PropertiesChanged``, as from the real BlueZ. The daemon points ``DBUS_SYSTEM_BUS_ADDRESS`` here (``[ble] bus``).
"""

import asyncio
import contextlib
import ctypes
import logging
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, PropertyAccess
from dbus_next.service import ServiceInterface, dbus_property, method
from dbus_next.signature import Variant

log = logging.getLogger(__name__)

ADAPTER = "/org/bluez/hci0"
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls into it
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""


class BluezError(RuntimeError):
    pass


class Adapter(ServiceInterface):
    """``org.bluez.Adapter1``: enough for bleak's scanner (never assign ``self.name``: dbus-next uses it)."""

    def __init__(self) -> None:
        super().__init__("org.bluez.Adapter1")
        self.discovering = False
        self.filters = 0

    @method()
    def SetDiscoveryFilter(self, properties: "a{sv}"):
        self.filters += 1

    @method()
    def StartDiscovery(self):
        self.discovering = True
        self.emit_properties_changed({"Discovering": True})

    @method()
    def StopDiscovery(self):
        self.discovering = False
        self.emit_properties_changed({"Discovering": False})

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> "s":
        return "00:1A:7D:DA:71:13"

    @dbus_property(access=PropertyAccess.READ)
    def Powered(self) -> "b":
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Discovering(self) -> "b":
        return self.discovering

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> "as":
        return ["central", "peripheral"]


class Device(ServiceInterface):
    """``org.bluez.Device1`` of one advertising phone."""

    def __init__(self, address: str, rssi: int, data: dict[int, bytes]) -> None:
        super().__init__("org.bluez.Device1")
        self.address = address
        self.rssi = rssi
        self.data = data

    def update(self, rssi: int, data: dict[int, bytes]) -> None:
        self.rssi, self.data = rssi, data
        self.emit_properties_changed({"RSSI": rssi, "ManufacturerData": self._data()})

    def _data(self) -> dict[int, Variant]:
        return {k: Variant("ay", v) for k, v in self.data.items()}

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> "s":
        return self.address

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> "s":
        return "random"

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> "o":
        return ADAPTER

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> "s":
        return self.address

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> "n":
        return self.rssi

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> "a{qv}":
        return self._data()

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> "b":
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> "b":
        return False

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> "as":
        return []


class FakeBluez:
    """The private bus and the fake BlueZ on it; :meth:`advertise` is a phone's advert seen at an RSSI."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory.absolute() / "hwsim-dbus.sock"
        self._config = directory.absolute() / "hwsim-dbus.conf"
        self._daemon: subprocess.Popen[bytes] | None = None
        self._bus: MessageBus | None = None
        self._devices: dict[str, Device] = {}
        self.adapter = Adapter()
        self.adverts = 0

    @property
    def address(self) -> str:
        return f"unix:path={self.socket}"

    async def start(self) -> None:
        binary = shutil.which("dbus-daemon")
        if binary is None:
            raise BluezError("dbus-daemon is not installed (apt package dbus-daemon)")
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self._config.write_text(BUS_CONFIG.format(socket=self.socket), encoding="utf-8")
        self._daemon = subprocess.Popen([binary, f"--config-file={self._config}", "--nofork", "--nopidfile"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent)  # noqa: PLW1509 (one libc call, no locks)
        for _ in range(100):
            if self.socket.exists():
                break
            await asyncio.sleep(0.05)
        else:
            await self.stop()
            raise BluezError("dbus-daemon did not create its socket")
        # dbus-daemon creates its socket file before it listens: on a loaded machine a connection in between is
        # refused (seen in the e2e suite as "hw-sim runs no fake BlueZ"), so refused connections are retried.
        for _ in range(100):
            try:
                self._bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
                break
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)
        else:
            await self.stop()
            raise BluezError("dbus-daemon did not accept connections on its socket")
        self._bus.export(ADAPTER, self.adapter)
        await self._bus.request_name("org.bluez")

    async def stop(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None
        if self._daemon is not None:
            self._daemon.terminate()
            try:
                await asyncio.to_thread(self._daemon.wait, 5)
            except subprocess.TimeoutExpired:
                self._daemon.kill()
            self._daemon = None

    def advertise(self, address: str, company: int, data: bytes, rssi: int) -> None:
        """One advert heard: a new device appears (InterfacesAdded) or the known one changes (PropertiesChanged)."""
        if self._bus is None:
            raise BluezError("the fake BlueZ is not running")
        self.adverts += 1
        device = self._devices.get(address)
        if device is None:
            device = self._devices[address] = Device(address, rssi, {company: data})
            self._bus.export(_path(address), device)
        else:
            device.update(rssi, {company: data})

    def forget(self, address: str) -> None:
        """The phone left (InterfacesRemoved), as BlueZ does when a device is no longer seen."""
        if self._bus is not None and self._devices.pop(address, None) is not None:
            self._bus.unexport(_path(address))

    def describe(self) -> dict[str, Any]:
        return {"bus": self.address if self._bus else None, "discovering": self.adapter.discovering,
                "devices": len(self._devices), "adverts": self.adverts}


def _die_with_parent() -> None:
    """In the child before exec: the bus goes when hw-sim goes, even by ``kill -9`` (no orphaned dbus-daemon)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _path(address: str) -> str:
    return f"{ADAPTER}/dev_{address.replace(':', '_')}"
