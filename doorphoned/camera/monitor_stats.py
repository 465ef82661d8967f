"""Video quality per viewer, from the RTCP receiver reports each viewer sends back.

The shared media has one ``rtpsession``; every viewer is a remote RTP source in it, with the last report block
it sent about our stream: fraction lost, cumulative lost, highest sequence number, jitter and the round trip
(from LSR/DLSR). Which source is which viewer: the report's ``rtcp-from`` address is the client's RTCP port
over UDP, and its RTSP connection's address over TCP interleaved. A viewer that sent no report yet (or never
does: FFmpeg sends none over TCP) says ``"rtcp": false``. A viewer's fps and bitrate are what its reports say
it received: packets per second from the advance of its highest sequence number, times the stream's own bytes
per packet and packets per frame (both measured at the payloader), so they fall below the encoder's when the
viewer loses packets.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from doorphoned.camera.monitor_auth import ViewerState

if TYPE_CHECKING:
    from doorphoned.camera.monitor import MonitorServer

NTP_UNIT = 65536.0


def _sources(server: MonitorServer) -> list[dict[str, Any]]:
    """Every remote source's stats in the shared media's RTP session(s), as plain dicts."""
    found: list[dict[str, Any]] = []
    for media in list(server._medias):
        stream = media.get_stream(0)
        session = stream.get_rtpsession() if stream is not None else None
        if session is None:
            continue
        stats = session.get_property("stats")
        for entry in stats.get_value("source-stats") or []:
            source = {entry.nth_field_name(i): entry.get_value(entry.nth_field_name(i))
                      for i in range(entry.n_fields())}
            if not source.get("internal") and source.get("have-rb"):
                found.append(source)
    return found


def _transport(client: Any) -> tuple[str, int | None]:
    """("udp", the client's RTCP port) or ("tcp", None), from the client's one session's transport."""
    found: list[tuple[str, int | None]] = []

    def visit(_client: Any, session: Any, *_: Any) -> Any:
        for sessmedia in session.filter(None) if hasattr(session, "filter") else []:
            transport = sessmedia.get_transport(0)
            if transport is None:
                continue
            spec = transport.get_transport()
            if int(spec.lower_transport) & 1:  # GST_RTSP_LOWER_TRANS_UDP
                found.append(("udp", spec.client_port.max))
            else:
                found.append(("tcp", None))
        return _filter_keep()

    client.session_filter(visit)
    return found[0] if found else ("tcp", None)


def _filter_keep() -> Any:
    from doorphoned.camera.monitor import _gi
    return _gi().server.RTSPFilterResult.KEEP


def _quality(source: dict[str, Any], server: MonitorServer) -> dict[str, Any]:
    ssrc = int(source.get("ssrc", 0))
    now, highest = time.monotonic(), int(source.get("rb-exthighestseq", 0))
    enc_fps, _ = server.encoder.rates()
    pkt_rate, pay_bps = server.packets.rates()
    rx_rate = _received_rate(server, ssrc, now, highest, pkt_rate)
    bytes_per_pkt = pay_bps / 8 / pkt_rate if pkt_rate else 0.0
    pkts_per_frame = pkt_rate / enc_fps if enc_fps else 0.0
    rtt = int(source.get("rb-round-trip", 0)) / NTP_UNIT * 1000
    return {"rtcp": True, "fps": round(rx_rate / pkts_per_frame, 2) if pkts_per_frame else 0.0,
            "bitrate_bps": int(rx_rate * bytes_per_pkt * 8),
            "packet_loss": round(int(source.get("rb-fractionlost", 0)) / 256, 4),
            "packets_lost": int(source.get("rb-packetslost", 0)), "rtt_ms": round(rtt, 2),
            "jitter": int(source.get("rb-jitter", 0))}


def _received_rate(server: MonitorServer, ssrc: int, now: float, highest: int, default: float) -> float:
    """Packets a second the viewer's reports say it received: between the last two reports that moved its
    highest sequence number. Rated between reports, not between questions: two status queries in a row (the
    call's end right after a status poll) see the same report, and would read a viewer as receiving nothing."""
    before = server.report_history.get(ssrc)
    if before is None:
        server.report_history[ssrc] = (now, highest, default)
        return default
    seen_at, seen_highest, rate = before
    if highest != seen_highest and now > seen_at:
        rate = max(0.0, (highest - seen_highest) / (now - seen_at))
        server.report_history[ssrc] = (now, highest, rate)
    return rate


def viewer_list(server: MonitorServer) -> list[dict[str, Any]]:
    """Every viewer's entry; report history of sources that are gone is dropped (no growth per viewer).

    The viewers are read from a copy: asking a client for its transport can make gst-rtsp-server end
    a session there and then (its signal handler removes the viewer while we iterate); a viewer gone
    meanwhile is left out."""
    sources = _sources(server)
    entries = [viewer_quality(server, viewer, server.client(key), sources)
               for key, viewer in list(server.access.viewers.items()) if key in server.access.viewers]
    live = {int(source.get("ssrc", 0)) for source in sources}
    for ssrc in [ssrc for ssrc in server.report_history if ssrc not in live]:
        del server.report_history[ssrc]
    return entries


def viewer_quality(server: MonitorServer, viewer: ViewerState, client: Any,
                   sources: list[dict[str, Any]]) -> dict[str, Any]:
    """The viewer's public entry: who, since when, its cap, its transport and what its reports say."""
    entry: dict[str, Any] = {"id": viewer.id, "purpose": viewer.purpose, "remote": viewer.remote,
                             "since": round(viewer.since, 3), "cap_seconds": viewer.cap_seconds,
                             "grant": viewer.grant.id if viewer.grant else None}
    kind, rtcp_port = _transport(client) if client is not None else ("tcp", None)
    entry["transport"] = kind
    match = _match(sources, client, kind, rtcp_port)
    entry.update(_quality(match, server) if match else {"rtcp": False, "fps": None, "bitrate_bps": None,
                                                        "packet_loss": None, "packets_lost": None,
                                                        "rtt_ms": None, "jitter": None})
    return entry


def _match(sources: list[dict[str, Any]], client: Any, kind: str, rtcp_port: int | None) -> dict[str, Any] | None:
    """The source whose reports came from this viewer: from its RTCP port over UDP, from its RTSP
    connection over TCP interleaved (gst-rtsp-server gives such reports the connection's address)."""
    ip, tcp_port = _connection_address(client)
    port = rtcp_port if kind == "udp" else tcp_port
    return next((s for s in sources if s.get("rtcp-from") == f"{ip}:{port}"), None)


def _connection_address(client: Any) -> tuple[str, int | None]:
    conn = client.get_connection() if client is not None else None
    if conn is None:
        return "", None
    address = conn.get_read_socket().get_remote_address()
    return address.get_address().to_string(), address.get_port()
