"""Admission before media (doorphoned.sip.shed): pure logic, no pjsua2."""

from __future__ import annotations

from doorphoned.sip.shed import Shedder, duplicated_header

INVITE = ("INVITE sip:door@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n"
          "From: <sip:a@10.0.0.5>;tag=1\r\nTo: <sip:door@10.0.0.1>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
          "Content-Length: 0\r\n\r\n")


def test_a_stranger_is_refused_403_before_anything_else():
    shed = Shedder(frozenset({"10.0.0.5"}))
    assert (shed.verdict("10.0.0.9:5060", INVITE, [], 0.0).code, shed.counts) == (403, {"not_allowed": 1})


def test_duplicate_from_to_call_id_or_cseq_is_400_compact_forms_included():
    for extra in ("From: <sip:b@10.0.0.5>;tag=2\r\n", "f: <sip:b@10.0.0.5>\r\n", "To: <sip:x@y>\r\n",
                  "i: other\r\n", "CSeq: 2 INVITE\r\n"):
        message = INVITE.replace("Content-Length", extra + "Content-Length")
        assert duplicated_header(message), extra
        assert Shedder(frozenset({"10.0.0.5"})).verdict("10.0.0.5:5060", message, [], 0.0).code == 400
    assert duplicated_header(INVITE) == ""
    assert duplicated_header(INVITE + "From: in the body\r\n") == ""  # the body is not headers


def test_live_calls_bound_busy_and_per_source_then_rate():
    shed = Shedder(frozenset({"10.0.0.5", "10.0.0.6"}), max_live=3, max_per_second=4, per_source=2)
    assert shed.verdict("10.0.0.5:5060", INVITE, ["10.0.0.6"] * 3, 0.0).code == 486
    limited = shed.verdict("10.0.0.5:5060", INVITE, ["10.0.0.5", "10.0.0.5"], 0.0)
    assert (limited.code, limited.reason, limited.retry_after) == (503, "rate_limited", 5)
    assert [shed.verdict("10.0.0.6:5060", INVITE, [], 0.1 * i).code for i in range(5)] == [0, 0, 0, 0, 503]
    assert shed.verdict("10.0.0.6:5060", INVITE, [], 1.05).code == 0  # the second is over
    assert shed.counts == {"busy": 1, "rate_limited": 1, "admitted": 5, "overloaded": 1}


def test_outgoing_calls_count_towards_the_rate():
    shed = Shedder(frozenset({"10.0.0.5"}), max_per_second=2)
    shed.outgoing(0.0)
    shed.outgoing(0.0)
    assert shed.verdict("10.0.0.5:5060", INVITE, [], 0.5).code == 503
