"""The live monitor stream: an RTSP server (gst-rtsp-server through PyGObject) at ``/live/ch00_0``.

One H.264 encoder is shared by every viewer (``set_shared(True)``): the pipeline is built when the first
viewer sets up and torn down when the last one leaves, so an unwatched stream costs nothing. Frames come
from a :class:`core.frames.FrameSource` mailbox, pushed into ``appsrc`` by a producer thread paced to their
arrival (started on ``media-configure``, stopped on ``unprepared``) -- never from ``need-data``, which fires
hundreds of times a second and starves the clients (NOTES-deps.md).

Access (``monitor_auth``): digest auth with the installer's account, and one-time grants for a single
session each; a viewer limit (503 for the next one); each session hard-closed at its cap. All GLib work
happens on the server's own main-context thread; the public methods are called from any thread and hand
their work over with :meth:`MonitorServer._call`.

``python -m doorphoned.camera.monitor --synthetic`` hosts it over a synthetic scene with a JSON-lines
control on stdin/stdout (``monitor_host``), for tests and the bench until the camera process hosts it.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

from doorphoned.camera import monitor_watch, stream_priority
from doorphoned.camera.monitor_auth import (
    INSTALLER,
    Access,
    SessionGrant,
    ViewerState,
    check_cap,
    check_purpose,
)
from doorphoned.core.frames import FrameSource
from doorphoned.core.urls import redact_url

log = logging.getLogger(__name__)

PATH = "/live/ch00_0"
BACKLOG = 128  # gst-rtsp-server's default of 5 turns a burst of connections into 1 s SYN retries
ROLE = "viewer"
USER_FIELD = "doorphone.user"
FOLLOW_UP_KEY_FRAMES = (0.2, 0.4, 0.6, 0.8, 1.0)  # seconds after a viewer's PLAY (see MonitorServer._on_play)
ELEMENTS = ("appsrc", "queue", "videoconvert", "x264enc", "rtph264pay", "rtpbin", "udpsink")
# x264 on one core: its default (a thread per core, sliced) made each frame a burst on both cores of a 2-core unit
# at the instant the same frame reached QR decoding; one thread keeps 15 fps at 640x480 (docs/performance.md).
ENCODER_THREADS = 1
DOOR_PATH_FIRST = 0.02  # s a frame waits for QR decoding to finish with it before the encoder gets it
RAW_FRAMES_QUEUED = 2  # raw frames waiting in appsrc and again before the encoder: older ones are dropped
WATCH_INTERVAL = 1.0  # seconds between two looks of the stall watchdog (monitor_watch)
T = TypeVar("T")
_USERNAME = re.compile(r'username="([^"]{1,128})"')


@dataclass(frozen=True)
class MonitorSettings:
    """What the stream needs from config (the lead maps these to ``[monitor]`` keys).

    ``session_cap_seconds`` is the default cap of an issued grant (the cloud's 3 minutes);
    ``installer_cap_seconds`` caps the installer account's sessions (0: no cap); ``grant_ttl_seconds`` is
    how long an issued grant waits for its viewer before it dies unused; ``setup_seconds`` is how long a
    connection may take to become a viewer before it is closed (a flood of idle connections drains);
    ``public_host`` is the host put in grant URLs (the unit's address as viewers reach it)."""

    host: str = "0.0.0.0"
    port: int = 8554
    public_host: str = "127.0.0.1"
    width: int = 640
    height: int = 480
    fps: int = 15
    bitrate_kbps: int = 1000
    user: str = INSTALLER
    password: str = ""
    max_viewers: int = 4
    session_cap_seconds: int = 180
    max_cap_seconds: int = 3600
    installer_cap_seconds: int = 0
    grant_ttl_seconds: int = 60
    setup_seconds: int = 15
    encoder_nice: int = 10  # the stream's streaming threads' nice value (stream_priority); 0: not lowered


class MonitorError(RuntimeError):
    """The stream cannot start (port taken, a GStreamer element missing) or was used wrongly."""


class Gi(NamedTuple):
    """The GObject modules the server uses."""

    glib: Any
    gst: Any
    rtsp: Any
    server: Any
    video: Any


@functools.cache
def _gi() -> Gi:
    """GLib and GStreamer, imported on first use so that the daemon loads without GStreamer installed."""
    import gi
    for name in ("Gst", "GstRtsp", "GstRtspServer", "GstVideo"):
        gi.require_version(name, "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer, GstVideo
    Gst.init(None)
    return Gi(GLib, Gst, GstRtsp, GstRtspServer, GstVideo)


class RateMeter:
    """Buffers and bytes over the last few seconds, for the encoder's fps and bitrate."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self._events: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self.total = 0  # buffers ever counted: the stall watchdog looks at its advance

    def add(self, size: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.total += 1
            self._events.append((now, size))
            while self._events and self._events[0][0] < now - self.window:
                self._events.popleft()

    def rates(self) -> tuple[float, int]:
        """(per second, bits per second) over the window; zero when nothing flowed lately."""
        now = time.monotonic()
        with self._lock:
            recent = [size for at, size in self._events if at >= now - self.window]
        return round(len(recent) / self.window, 2), int(sum(recent) * 8 / self.window)


class Producer:
    """Pushes the source's frames into one prepared media's ``appsrc`` until the media is unprepared."""

    def __init__(self, source: FrameSource, appsrc: Any, settings: MonitorSettings, gst: Any) -> None:
        self._source = source
        self._sub = source.subscribe("monitor")
        self._appsrc = appsrc
        self._settings = settings
        self._gst = gst
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor-producer", daemon=True)
        self.pushed = 0
        self.held = 0  # frames not pushed because appsrc was not PLAYING yet (see _playing)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._sub.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        # A frame closer than 3/4 of the stream's interval to the last one pushed is skipped: a faster
        # source is thinned to the stream's fps, while a source at that fps keeps every frame despite jitter.
        spacing = 0.75 / self._settings.fps
        last = -spacing
        while not self._stop.is_set():
            frame = self._sub.get(timeout=1.0)
            if frame is None or frame.monotonic - last < spacing:
                continue
            last = frame.monotonic
            # The door path first: QR decoding has this frame's instant to itself (both cores of a 2-core unit
            # free of the encoder), then the encoder takes it (bounded: a slow decode costs the stream at most
            # DOOR_PATH_FIRST a frame, never its frame rate).
            self._source.wait_finished("qr", frame.seq, DOOR_PATH_FIRST)
            self._push(frame.image)

    def _playing(self) -> bool:
        """Whether ``appsrc`` is PLAYING: only then does its ``do-timestamp`` stamp a frame with its running time.

        ``appsrc`` stamps a pushed frame with the clock's time minus its base time. A live media goes to
        PLAYING while it prepares; the pipeline hands its clock to every element first and each element its
        base time only as the bin changes that element's state, sources last. A frame pushed in between was
        stamped with the clock's absolute time (the machine's uptime, 24 minutes in the reproduced stall)
        instead of ~0: the first frame of a fresh stream lay that far ahead of all the others (docs/video.md,
        Stalls). Before PLAYING a live source sends nothing anyway, so nothing is lost by holding them.
        """
        _, current, _ = self._appsrc.get_state(0)
        return bool(current == self._gst.State.PLAYING)

    def _push(self, image: Any) -> None:
        if not self._playing():
            self.held += 1
            return
        s = self._settings
        if image.shape[0] != s.height or image.shape[1] != s.width:
            import cv2
            image = cv2.resize(image, (s.width, s.height), interpolation=cv2.INTER_AREA)
        buffer = self._gst.Buffer.new_wrapped(image.tobytes())
        if self._appsrc.emit("push-buffer", buffer) == self._gst.FlowReturn.OK:
            self.pushed += 1


class MonitorServer:
    """The RTSP server; :meth:`start` it, then :meth:`issue_session`, :meth:`revoke`, :meth:`viewers`."""

    def __init__(self, source: FrameSource, settings: MonitorSettings) -> None:
        self.source = source
        self.settings = settings
        self.access = Access(settings.max_viewers, settings.grant_ttl_seconds)
        self.encoder = RateMeter()
        self.packets = RateMeter()
        self.port = 0
        self._clients: dict[int, Any] = {}
        self._timers: dict[int, Any] = {}
        self._idle: dict[int, Any] = {}
        # ssrc -> (when its highest seq last moved, that seq, the packets a second its reports gave then)
        self.report_history: dict[int, tuple[float, int, float]] = {}
        self._producers: dict[int, Producer] = {}
        self._medias: list[Any] = []
        self._playing: set[int] = set()  # clients whose PLAY was answered: the watchdog expects RTP for them
        self.watch = monitor_watch.StallWatch()
        self._thread: threading.Thread | None = None
        self._loop: Any = None
        self._context: Any = None
        self.on_viewers: Callable[[int], None] | None = None  # called (GLib thread) when the count changes
        # Called (GLib thread) with True when the shared media is configured (a viewer is setting up: it
        # needs frames to preroll before it can play) and False when it is gone (the last viewer left).
        self.on_streaming: Callable[[bool], None] | None = None

    def _streaming(self, active: bool) -> None:
        if self.on_streaming is not None:
            try:
                self.on_streaming(active)
            except Exception:  # the host's callback must not break the GLib loop
                log.exception("monitor: streaming callback failed")

    def _viewers_changed(self) -> None:
        """Tell the host the number of viewers (the camera process holds the capture active while > 0)."""
        if self.on_viewers is not None:
            try:
                self.on_viewers(len(self.access.viewers))
            except Exception:  # the host's callback must not break the GLib loop
                log.exception("monitor: viewer callback failed")

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the port and serve; raises :class:`MonitorError` when the port is taken or an element
        is missing (a stream that silently is not there is worse than a failed start)."""
        g = _gi()
        missing = [name for name in ELEMENTS if g.gst.ElementFactory.find(name) is None]
        if missing:
            raise MonitorError(f"GStreamer elements missing: {', '.join(missing)} (install the plugins)")
        self._context = g.glib.MainContext.new()
        self._loop = g.glib.MainLoop.new(self._context, False)
        self._server = self._build_server(g.server)
        if self._server.attach(self._context) == 0:
            raise MonitorError(f"cannot listen on {self.settings.host}:{self.settings.port} (port taken?)")
        self.port = self._server.get_bound_port()
        watchdog = g.glib.timeout_source_new(int(WATCH_INTERVAL * 1000))
        watchdog.set_callback(lambda *_: self._watch())
        watchdog.attach(self._context)
        self._thread = threading.Thread(target=self._run_loop, name="monitor-glib", daemon=True)
        self._thread.start()
        log.info("monitor stream at rtsp://%s:%d%s", self.settings.public_host, self.port, PATH)

    def stop(self) -> None:
        """Close every viewer and the loop; safe to call twice."""
        if self._thread is None:
            return
        try:
            self._call(self._close_all)
        finally:
            self._loop.quit()
        self._thread.join(timeout=5)
        self._thread = None

    def _run_loop(self) -> None:
        self._context.push_thread_default()
        try:
            self._loop.run()
        finally:
            self._context.pop_thread_default()

    def _build_server(self, rtsp_server: Any) -> Any:
        server = rtsp_server.RTSPServer.new()
        server.set_address(self.settings.host)
        server.set_service(str(self.settings.port))
        server.set_backlog(BACKLOG)
        self._auth = rtsp_server.RTSPAuth.new()
        self._auth.set_supported_methods(_gi().rtsp.RTSPAuthMethod.DIGEST)
        server.set_auth(self._auth)
        if self.settings.password:
            self._add_user(self.settings.user, self.settings.password)
        factory = rtsp_server.RTSPMediaFactory.new()
        factory.set_launch(self._launch())
        factory.set_shared(True)
        permissions = rtsp_server.RTSPPermissions.new()
        permissions.add_permission_for_role(ROLE, "media.factory.access", True)
        permissions.add_permission_for_role(ROLE, "media.factory.construct", True)
        factory.set_permissions(permissions)
        factory.connect("media-configure", self._on_media_configure)
        server.get_mount_points().add_factory(PATH, factory)
        server.connect("client-connected", self._on_client_connected)
        return server

    def _launch(self) -> str:
        """The shared media's pipeline.

        ``appsrc`` never blocks its producer and holds at most :data:`RAW_FRAMES_QUEUED` frames, dropping
        the oldest (a stalled pipeline cannot grow it by a 900 kB frame each 67 ms). The leaky ``queue``
        before the encoder gives the encoder its own thread and, with a time limit, a real maximum latency:
        without it the live ``appsrc`` reports a maximum latency equal to its minimum (0), the RTSP stream's
        synchronising sink finds no room for its 20 ms processing deadline and posts "Pipeline
        construction is invalid, please add queues" at every latency query (docs/video.md, Stalls).
        """
        s = self.settings
        caps = f"video/x-raw,format=BGR,width={s.width},height={s.height},framerate={s.fps}/1"
        queued_ns = RAW_FRAMES_QUEUED * 1_000_000_000 // s.fps
        return (f"( appsrc name=src is-live=true format=time do-timestamp=true caps={caps} block=false "
                f"max-buffers={RAW_FRAMES_QUEUED} max-bytes=0 leaky-type=downstream "
                f"! queue name=raw leaky=downstream max-size-buffers={RAW_FRAMES_QUEUED} max-size-bytes=0 "
                f"max-size-time={queued_ns} "
                f"! videoconvert ! video/x-raw,format=I420 "
                f"! x264enc name=enc tune=zerolatency speed-preset=ultrafast threads={ENCODER_THREADS} "
                f"bitrate={s.bitrate_kbps} "
                f"key-int-max={2 * s.fps} ! video/x-h264,profile=baseline "
                f"! rtph264pay name=pay0 pt=96 config-interval=1 )")

    def _add_user(self, user: str, password: str) -> None:
        token = _gi().server.RTSPToken()
        token.set_string("media.factory.role", ROLE)
        token.set_string(USER_FIELD, user)
        self._auth.add_digest(user, password, token)

    # --- calls from other threads ----------------------------------------------------------------

    def _call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the GLib thread and return its result (or raise its exception) here."""
        if self._thread is None:
            raise MonitorError("monitor server is not running")
        if threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        box: list[Any] = []

        def run(*_: Any) -> bool:
            try:
                box.append((True, fn()))
            except Exception as exc:  # handed back to the caller's thread
                box.append((False, exc))
            done.set()
            return False

        source = _gi().glib.idle_source_new()
        source.set_callback(run)
        source.attach(self._context)
        if not done.wait(timeout):
            raise MonitorError("monitor server did not answer (GLib thread stuck)")
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _later(self, seconds: float, fn: Callable[[], Any]) -> Any:
        """A one-shot timer on the GLib thread; returns the source (``destroy()`` cancels it)."""
        source = _gi().glib.timeout_source_new(max(1, int(seconds * 1000)))
        source.set_callback(lambda *_: bool(fn()) and False)
        source.attach(self._context)
        return source

    def issue_session(self, purpose: str, cap_seconds: int | None = None) -> SessionGrant:
        """A one-time credential for one viewer session of at most ``cap_seconds``."""
        check_purpose(purpose)
        cap = check_cap(self.settings.session_cap_seconds if cap_seconds is None else cap_seconds,
                        self.settings.max_cap_seconds)
        return self._call(lambda: self._issue(purpose, cap))

    def _issue(self, purpose: str, cap: int) -> SessionGrant:
        grant = self.access.new_grant(purpose, cap, self.url_for)
        self._add_user(grant.user, grant.password)
        self._later(self.settings.grant_ttl_seconds, lambda: self._expire(grant))
        log.info("monitor grant %s issued for %s (cap %d s): %s", grant.id, purpose, cap, redact_url(grant.url))
        return grant

    def _expire(self, grant: SessionGrant) -> None:
        if grant.client is None and not grant.spent:
            log.info("monitor grant %s expired unused", grant.id)
            self._retire(grant)

    def revoke(self, grant_id: str) -> bool:
        """Kill a grant (its call ended): the credential dies and a viewer using it is disconnected.
        False when no live grant has that id."""
        return self._call(lambda: self._revoke(grant_id))

    def _revoke(self, grant_id: str) -> bool:
        grant = self.access.find(grant_id)
        if grant is None:
            return False
        client = grant.client
        self._retire(grant)
        if client is not None:
            client.close()
        log.info("monitor grant %s revoked", grant_id)
        return True

    def _retire(self, grant: SessionGrant) -> None:
        self.access.spend(grant)
        self._auth.remove_digest(grant.user)

    def url_for(self, user: str, password: str) -> str:
        return (f"rtsp://{quote(user, safe='')}:{quote(password, safe='')}@{self.settings.public_host}:"
                f"{self.port}{PATH}")

    def viewers(self) -> list[dict[str, Any]]:
        """Each viewer (id, purpose, remote, since, cap) with its RTCP-reported quality."""
        return self._call(self._viewer_list)

    def encoder_stats(self) -> dict[str, Any]:
        fps, bps = self.encoder.rates()
        return {"fps": fps, "bitrate_bps": bps}

    def pipeline_stats(self) -> dict[str, Any]:
        """Where frames stop when a viewer gets none: frames pushed into ``appsrc`` by the current media's
        producer, frames encoded and RTP packets sent since the start, packets a second now, and what the
        stall watchdog did (``stalls``: key frames forced after a quiet spell; ``restarts``: media
        restarted; ``quiet_seconds``: how long no packet went out while someone plays); ``frames_held``: frames
        not pushed because ``appsrc`` was not PLAYING yet; ``qr_first_timeouts``: frames the producer pushed
        before QR decoding was done with them (it waits at most DOOR_PATH_FIRST); ``synced_sinks``: the stream's
        sinks that wait on the
        clock (always 0; a sink left syncing after a PLAY is what stalled fresh streams: docs/video.md, Stalls)."""
        packets, _ = self.packets.rates()
        producers = list(self._producers.values())
        synced = sum(sink.get_property("sync") for media in list(self._medias) for sink in self._stream_sinks(media))
        return {"frames_pushed": sum(p.pushed for p in producers), "frames_held": sum(p.held for p in producers),
                "synced_sinks": synced,
                "frames_encoded": self.encoder.total, "packets_sent": self.packets.total,
                "packets_per_second": packets, "qr_first_timeouts": getattr(self.source, "waits_timed_out", 0),
                "stalls": self.watch.stalls, "restarts": self.watch.restarts,
                "quiet_seconds": round(self.watch.quiet_for(time.monotonic()), 1)}

    def status(self) -> dict[str, Any]:
        """What the stream does (URL, encoder, viewers, limit) and where frames stop (``pipeline``)."""
        return {"url": f"rtsp://{self.settings.public_host}:{self.port}{PATH}", "encoder": self.encoder_stats(),
                "viewers": self.viewers(), "max_viewers": self.settings.max_viewers,
                "pipeline": self.pipeline_stats()}

    # --- GLib thread: clients ----------------------------------------------------------------------

    def _on_client_connected(self, _server: Any, client: Any) -> None:
        self._clients[id(client)] = client
        self._idle[id(client)] = self._later(self.settings.setup_seconds, lambda: self._drop_idle(client))
        for request in ("pre-options-request", "pre-describe-request", "pre-setup-request", "pre-play-request"):
            client.connect(request, self._on_request)
        client.connect("setup-request", self._on_setup)
        client.connect("send-message", self._on_send_message)
        client.connect("play-request", self._on_play)
        client.connect("closed", self._on_closed)

    @staticmethod
    def _user(ctx: Any) -> str | None:
        """The user the request authenticated as (set by gst-rtsp-server's digest check)."""
        token = ctx.token if ctx is not None else None
        return token.get_string(USER_FIELD) if token is not None else None

    def _claimed_user(self, ctx: Any) -> str | None:
        """The user name a request's Authorization header claims, before gst-rtsp-server checks it (the
        pre-request signals run first); only ever used to refuse, never to admit."""
        rtsp = _gi().rtsp
        try:
            result, value = ctx.request.get_header(rtsp.RTSPHeaderField.AUTHORIZATION, 0)
        except UnicodeDecodeError:  # PyGObject cannot hand over a header that is not UTF-8
            raise MonitorError("Authorization header is not UTF-8") from None
        if result != rtsp.RTSPResult.OK or not value:
            return None
        match = _USERNAME.search(value)
        return match.group(1) if match else None

    def _on_request(self, client: Any, ctx: Any) -> Any:
        """Refuse a grant presented by another client than the one it is bound to (401), and new viewers
        past the limit (503); anything else goes on to gst-rtsp-server's own digest check."""
        status = _gi().rtsp.RTSPStatusCode
        try:
            user = self._claimed_user(ctx)
        except MonitorError as exc:
            log.info("monitor: bad request from %s: %s", self._remote(client), exc)
            return status.BAD_REQUEST
        if user is None:
            return status.OK
        if not self.access.may_use(user, client):
            log.info("monitor: refused a spent or foreign grant from %s", self._remote(client))
            return status.UNAUTHORIZED
        if self.access.full(client):
            log.info("monitor: viewer limit %d reached, refused %s", self.access.max_viewers, self._remote(client))
            return status.SERVICE_UNAVAILABLE
        return status.OK

    def _on_setup(self, client: Any, ctx: Any) -> None:
        """A SETUP passed the digest check: the client is a viewer now, and a grant it used is its own."""
        user = self._user(ctx)
        if user is None or id(client) in self.access.viewers:
            return
        viewer = self.access.admit(client, user, self._remote(client), self.settings.installer_cap_seconds)
        self._start_cap(client, viewer)
        log.info("monitor: viewer %d (%s) from %s", viewer.id, viewer.purpose, viewer.remote)
        self._viewers_changed()

    def _drop_idle(self, client: Any) -> None:
        """A connection that set up no session in time is closed: idle connections cost a descriptor each."""
        self._idle.pop(id(client), None)
        if id(client) in self._clients and id(client) not in self.access.viewers:
            log.info("monitor: closed a connection from %s that set up nothing", self._remote(client))
            client.close()

    def _start_cap(self, client: Any, viewer: ViewerState) -> None:
        if viewer.cap_seconds > 0:
            self._timers[id(client)] = self._later(viewer.cap_seconds, lambda: self._cap_reached(client))

    def _cap_reached(self, client: Any) -> None:
        viewer = self.access.viewers.get(id(client))
        if viewer is not None:
            log.info("monitor: viewer %d reached its cap of %d s", viewer.id, viewer.cap_seconds)
        client.close()

    def _on_send_message(self, _client: Any, _ctx: Any, _message: Any) -> None:
        """Keep the stream's sinks from waiting on the clock across every viewer's PLAY (docs/video.md, Stalls).

        gst-rtsp-server 1.22 switches rate control back on at each PLAY (``setup_play_mode`` calls
        ``gst_rtsp_media_set_rate_control(media, TRUE)`` unless an ONVIF client sent ``Rate-Control: no``),
        which sets ``sync=true`` on the TCP viewers' ``appsink``: the one streaming thread that runs encoder,
        payloader and ``rtpbin`` then waits on the clock inside that sink, for minutes when a frame was stamped
        ahead (all viewers: PLAY 200, no RTP). The PLAY's reply goes out after that call and before the media
        is set PLAYING, so turning ``sync`` off again when a reply is sent means the first viewer's buffers
        never meet a synchronising sink. Rate control itself stays on: off, the sender reports lose their NTP
        timestamps (``disable-sr-timestamp``) and with them the viewers' round-trip times. (The signal hands
        Python no context, hence every current media; a reply is sent once per request, the check is cheap.)
        """
        for media in list(self._medias):
            for sink in self._stream_sinks(media):
                if sink.get_property("sync"):
                    sink.set_property("sync", False)

    def _on_play(self, client: Any, _ctx: Any) -> None:
        """A new viewer starts at a key frame, not at the next scheduled one (first frame < 1 s).

        One key frame at PLAY is not enough: a client that probes the stream before it decodes may use up
        that key frame in the probe and drop it (FFmpeg with ``-fflags nobuffer``, as low-latency players
        run it, does), then wait for the next scheduled one (``key-int-max``: 2 s). So follow-up key frames
        come at :data:`FOLLOW_UP_KEY_FRAMES` after the PLAY: a handful of larger frames per new viewer.
        """
        self._playing.add(id(client))
        self._force_key_unit()
        for delay in FOLLOW_UP_KEY_FRAMES:
            self._later(delay, self._force_key_unit)

    def _watch(self) -> bool:
        """The stall watchdog's tick (GLib thread, every :data:`WATCH_INTERVAL` s; see ``monitor_watch``)."""
        try:
            action = self.watch.tick(time.monotonic(), self.packets.total, bool(self._playing))
            if action is not None:
                self._recover(action)
        except Exception:  # the watchdog must outlive whatever went wrong in one tick
            log.exception("monitor: stall watchdog failed")
        return True

    def _recover(self, action: str) -> None:
        stats = self.pipeline_stats()
        where = (f"{len(self._playing)} viewer(s) playing, frames pushed {stats['frames_pushed']}, "
                 f"encoded {stats['frames_encoded']}, packets sent {stats['packets_sent']}; media "
                 + ", ".join(self._media_state(media) for media in self._medias))
        quiet = self.watch.quiet
        if action == monitor_watch.KEY:
            log.warning("monitor: stream stalled: no RTP for %.0f s (%s); forcing a key frame", quiet, where)
            self._force_key_unit()
            for media in self._medias:
                pipeline = media.get_element().get_parent()
                if pipeline is not None:  # a sink left behind its pipeline's state holds the thread in preroll
                    pipeline.sync_children_states()
                media.get_element().sync_children_states()
                media.set_pipeline_state(_gi().gst.State.PLAYING)
        else:
            log.warning("monitor: stream still stalled: no RTP for %.0f s (%s); restarting it (its viewers are "
                        "closed and reconnect to a new pipeline)", quiet, where)
            for key in list(self._playing):
                client = self._clients.get(key)
                if client is not None:
                    client.close()

    @staticmethod
    def _media_state(media: Any) -> str:
        """A media's status, pipeline state and whether its stream is held blocked (for the stall log)."""
        try:
            return MonitorServer._describe_media(media)
        except Exception as exc:  # a diagnosis must not stop the recovery
            return f"? ({type(exc).__name__})"

    @staticmethod
    def _describe_media(media: Any) -> str:
        stream = media.get_stream(0)
        blocking = stream.is_blocking() if stream is not None else None
        bin_ = media.get_element()
        parent = bin_.get_parent()
        states = []
        elements = [("pipeline", parent)] + [(name, bin_.get_by_name(name)) for name in ("src", "raw", "enc")]
        elements += [(sink.get_name(), sink) for sink in MonitorServer._stream_sinks(media)]
        for name, element in elements:
            if element is not None:
                _, current, pending = element.get_state(0)
                sink = name not in ("pipeline", "src", "raw", "enc")
                synced = " sync" if sink and element.get_property("sync") else ""
                states.append(f"{name} {current.value_nick}" + (f"->{pending.value_nick}" if int(pending) else "")
                              + synced)
        raw = bin_.get_by_name("raw")
        queued = raw.get_property("current-level-buffers") if raw is not None else None
        return f"{media.get_status().value_nick} ({', '.join(states)}; queued {queued}; blocking {blocking})"

    @staticmethod
    def _stream_sinks(media: Any) -> list[Any]:
        """The sinks gst-rtsp-server added for the viewers (an appsink each for RTP and RTCP over TCP, udpsinks):
        they live in the media's pipeline, beside its bin."""
        parent = media.get_element().get_parent()
        sinks: list[Any] = []
        if parent is not None:
            found = parent.iterate_sinks()
            while (item := found.next())[0] == _gi().gst.IteratorResult.OK:
                sinks.append(item[1])
        return sinks

    def stamp_ahead(self, seconds: float) -> int:
        """Test hook: the next encoded frame of each current media is stamped ``seconds`` ahead, as the fresh
        stream's first frame was (docs/video.md, Stalls); the number of media. Done at the encoder's output:
        nothing after it drops frames, so the frame surely reaches the stream's sinks."""
        return self._call(lambda: self._stamp_ahead(int(seconds * 1_000_000_000)))

    def _stamp_ahead(self, ahead: int) -> int:
        gst = _gi().gst

        def shift(_pad: Any, info: Any) -> Any:
            buffer = info.get_buffer()
            buffer.pts += ahead
            if buffer.dts != gst.CLOCK_TIME_NONE:
                buffer.dts += ahead
            return gst.PadProbeReturn.REMOVE

        for media in self._medias:
            media.get_element().get_by_name("enc").get_static_pad("src").add_probe(gst.PadProbeType.BUFFER, shift)
        log.warning("monitor: test hook stamps the next frame of %d media %.0f s ahead", len(self._medias),
                    ahead / 1e9)
        return len(self._medias)

    def block_encoder(self) -> int:
        """Test hook: block the current pipeline's encoder output for good, as a wedged pipeline would; only
        tearing the media down (the watchdog's restart) releases it. The number of pipelines blocked."""
        return self._call(self._block_encoder)

    def _block_encoder(self) -> int:
        gst = _gi().gst
        for media in self._medias:
            pad = media.get_element().get_by_name("enc").get_static_pad("src")
            pad.add_probe(gst.PadProbeType.BLOCK | gst.PadProbeType.BUFFER, lambda *_: gst.PadProbeReturn.OK)
        log.warning("monitor: test hook blocked the encoder of %d pipeline(s)", len(self._medias))
        return len(self._medias)

    def _force_key_unit(self) -> None:
        g = _gi()
        for media in self._medias:
            pay = media.get_element().get_by_name("pay0")
            if pay is not None:  # upstream from the payloader to the encoder; send_event takes the event
                pay.send_event(g.video.video_event_new_upstream_force_key_unit(g.gst.CLOCK_TIME_NONE, True, 0))

    def _on_closed(self, client: Any) -> None:
        self._clients.pop(id(client), None)
        self._playing.discard(id(client))
        for timers in (self._timers, self._idle):
            timer = timers.pop(id(client), None)
            if timer is not None:
                timer.destroy()
        viewer = self.access.viewers.get(id(client))
        grant = viewer.grant if viewer else None
        self.access.leave(client)
        if grant is not None:
            self._auth.remove_digest(grant.user)
        if viewer is not None:
            log.info("monitor: viewer %d left after %.0f s", viewer.id, time.time() - viewer.since)
            self._viewers_changed()

    @staticmethod
    def _remote(client: Any) -> str:
        conn = client.get_connection()
        if conn is None:
            return "?"
        return f"{conn.get_ip()}"

    def _close_all(self) -> None:
        for client in list(self._clients.values()):
            client.close()

    # --- GLib thread: the shared media -------------------------------------------------------------

    def _on_media_configure(self, _factory: Any, media: Any) -> None:
        gst = _gi().gst
        # No rate control: the TCP viewers' appsink sends each packet as it comes instead of waiting on the
        # clock for its running time plus the latency (a live source is paced by the camera already; the
        # wait added the sink's 20 ms processing deadline to glass-to-glass, docs/video.md Stalls). Every
        # PLAY turns it back on: _on_send_message keeps the sinks from syncing.
        media.set_rate_control(False)
        element = media.get_element()
        stream_priority.lower_streaming_threads(element.get_parent(), gst, self.settings.encoder_nice)
        producer = Producer(self.source, element.get_by_name("src"), self.settings, gst)
        enc_pad = element.get_by_name("enc").get_static_pad("src")
        counted = gst.PadProbeType.BUFFER | gst.PadProbeType.BUFFER_LIST
        enc_pad.add_probe(counted, self._count(self.encoder))
        pay_pad = element.get_by_name("pay0").get_static_pad("src")
        pay_pad.add_probe(counted, self._count(self.packets))
        self._producers[id(media)] = producer
        self._medias.append(media)
        media.connect("unprepared", self._on_unprepared)
        self._streaming(True)
        producer.start()

    @staticmethod
    def _count(meter: RateMeter) -> Callable[[Any, Any], Any]:
        gst = _gi().gst

        def probe(_pad: Any, info: Any) -> Any:
            # The payloader pushes the packets of a fragmented frame (a key frame: dozens) as one buffer
            # list, which a BUFFER probe never sees: counted packet by packet here.
            if info.type & gst.PadProbeType.BUFFER_LIST:
                packets = info.get_buffer_list()
                for index in range(packets.length() if packets is not None else 0):
                    meter.add(packets.get(index).get_size())
            else:
                buffer = info.get_buffer()
                meter.add(buffer.get_size() if buffer is not None else 0)
            return gst.PadProbeReturn.OK
        return probe

    def _on_unprepared(self, media: Any) -> None:
        producer = self._producers.pop(id(media), None)
        if producer is not None:
            producer.stop()
        if media in self._medias:
            self._medias.remove(media)
        if not self._medias:
            self._streaming(False)

    # --- GLib thread: quality ----------------------------------------------------------------------

    def _viewer_list(self) -> list[dict[str, Any]]:
        from doorphoned.camera.monitor_stats import viewer_list
        return viewer_list(self)

    def client(self, key: int) -> Any:
        """The RTSP client object of a viewer (GLib thread only)."""
        return self._clients.get(key)


def main(argv: list[str] | None = None) -> int:
    from doorphoned.camera.monitor_host import main as host_main
    return host_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
