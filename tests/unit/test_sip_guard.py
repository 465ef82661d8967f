"""The request guard's judgement (doorphoned.sip.guard.judge): pure logic, no pjsua2."""

from __future__ import annotations

import pytest

from doorphoned.sip.guard import ALLOW, NOT_ALLOWED, PASS, Branches, judge


def request(method: str = "INVITE", via: str = "10.0.0.5:5060", branch: str = "z9hG4bKa1", extra: str = "",
            to_tag: str = "") -> str:
    return (f"{method} sip:door@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {via};rport;branch={branch}\r\n"
            f"From: <sip:a@10.0.0.5>;tag=1\r\nTo: <sip:door@10.0.0.1>{to_tag}\r\nCall-ID: x\r\n"
            f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(("extra", "name"), [
    ("From: <sip:admin@10.0.0.5>;tag=2\r\n", "From"), ("f: <sip:b@10.0.0.5>\r\n", "From"),
    ("t: <sip:x@y>\r\n", "To"), ("i: other\r\n", "Call-ID"), ("CSeq: 2 INVITE\r\n", "CSeq"),
    ("Max-Forwards: 1\r\n", "Max-Forwards"), ("l: 10\r\n", "Content-Length"), ("call-id: y\r\n", "Call-ID")])
def test_a_header_that_may_appear_once_twice_is_400_naming_it_for_every_method(extra, name):
    for method in ("INVITE", "OPTIONS", "BYE", "FROBNICATE", "REGISTER"):
        answer = judge(request(method, extra=extra), Branches(), 0.0)
        assert (answer.code, answer.reason, answer.count) == (400, f"Duplicate {name} Header", "duplicate_header")
    ack = judge(request("ACK", extra=extra), Branches(), 0.0)
    assert ack.drop and ack.code == 0  # an ACK is never answered, and not acted on either


def test_a_body_line_that_looks_like_a_header_is_not_a_duplicate():
    assert judge(request() + "From: in the body\r\n", Branches(), 0.0).code == 0


def test_known_but_not_accepted_methods_out_of_dialog_are_405_with_allow():
    for method in sorted(NOT_ALLOWED):
        answer = judge(request(method), Branches(), 0.0)
        assert (answer.code, answer.allow) == (405, True), method
    assert not NOT_ALLOWED & set(ALLOW)
    assert judge(request("REFER", to_tag=";tag=x"), Branches(), 0.0).code == 0  # in a call: 603 from pjsua


def test_dialog_only_methods_out_of_dialog_are_481_and_pass_in_one():
    for method in ("BYE", "INFO", "UPDATE", "PRACK"):
        assert judge(request(method), Branches(), 0.0).code == 481, method
        assert judge(request(method, to_tag=";tag=x"), Branches(), 0.0).code == 0, method
    for method in ("INVITE", "OPTIONS", "CANCEL", "ACK", "FROBNICATE"):
        assert judge(request(method), Branches(), 0.0).code == 0, method


def test_a_branch_from_another_sent_by_is_482_and_a_retransmission_passes():
    seen = Branches(ttl=64.0)
    assert judge(request(), seen, 0.0).code == 0
    assert judge(request(), seen, 0.5).code == 0  # the same sender again: a retransmission, absorbed by pjsip
    other = judge(request(via="10.0.0.6:5060"), seen, 1.0)
    assert (other.code, other.reason, other.count) == (482, "Loop Detected", "branch_in_use")
    assert judge(request(via="10.0.0.6:5060", branch="z9hG4bKfresh"), seen, 1.0).code == 0
    assert judge(request("CANCEL", via="10.0.0.6:5060"), seen, 1.0).code == 0  # another method: another key
    assert judge(request("ACK", via="10.0.0.6:5060"), seen, 1.0).drop  # would confirm the first transaction
    assert judge(request("ACK"), seen, 1.0) == PASS  # the first sender's own ACK
    assert judge(request(via="10.0.0.6:5060"), seen, 70.0).code == 0  # the first transaction is long gone


def test_the_branch_book_is_bounded():
    seen = Branches(limit=100)
    for i in range(1_000):
        seen.other_sender(f"z9hG4bK{i}", "INVITE", "10.0.0.5", 0.0)
    assert len(seen.seen) == 100 and ("z9hG4bK999", "INVITE") in seen.seen
