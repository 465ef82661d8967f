"""The strict JSON rules every MQTT payload goes through (doorphoned.core.strictjson): pure logic, in process."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doorphoned.core.strictjson import MAX_DEPTH, StrictJsonError, Throttled, check_fields, depth, loads


@pytest.mark.parametrize(("payload", "error"), [
    (b'{"id":"nan1","ts":NaN,"door":2}', "ts: NaN is not a finite number"),
    (b'{"id":"a","ts":Infinity}', "ts: Infinity is not a finite number"),
    (b'{"id":"a","x":[1,{"y":-Infinity}]}', "x[1].y: -Infinity is not a finite number"),
    (b'{"id":"a","ts":1e999}', "ts: 1e999 is not a finite number"),
    (b'{"id":"a","door":1,"door":2}', "the document: duplicate key 'door'"),
    (b'{"id":"a","u":[{"k":1,"k":1}]}', "u[0]: duplicate key 'k'"),
    (b'{"id":"a","name":"x\\u0000y"}', "name contains a NUL character"),
    (b'{"id":"a","name":"\\u202eevil"}', "name contains a bidi control (U+202E)"),
    (b'{"id":"a","name":"\\ud800"}', "name contains a lone surrogate"),
    (b'{"id":"a","n\\u0000":1}', "key 'n\\x00' contains a NUL character"),
    (b'{"id":"a","name":"\xff\xfe"}', "payload is not valid UTF-8"),
    (b'{"a": ' * 5000 + b"1" + b"}" * 5000, f"nested deeper than {MAX_DEPTH} levels"),
    (b"[" * 60000, f"nested deeper than {MAX_DEPTH} levels"),
    (b'{"n": ' + b"9" * 5000 + b"}", "digits is too long"),
    (b"{nope", "malformed JSON"),
])
def test_hostile_documents_are_refused_naming_the_field(payload, error):
    with pytest.raises(StrictJsonError) as caught:
        loads(payload)
    assert error in str(caught.value)


def test_a_refused_document_still_carries_its_id_when_it_parsed():
    with pytest.raises(StrictJsonError) as caught:
        loads(b'{"id":"nan1","ts":NaN,"door":2}')
    assert caught.value.document["id"] == "nan1"
    with pytest.raises(StrictJsonError) as caught:
        loads(b'{"a": ' * 5000)
    assert caught.value.document is None


def test_depth_counts_brackets_outside_strings_only():
    assert depth('{"a": "[[[[[[", "b": [[1]]}') == 3
    assert depth('["\\"[[[["]') == 1
    assert loads('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == {"a": "[" * 44}


def test_unknown_fields_are_named():
    assert check_fields({"door": 1, "sourcee": "x"}, frozenset({"door", "source"}), "open_door") == \
        "open_door: unknown field 'sourcee'"
    assert check_fields({"door": 1}, frozenset({"door"}), "open_door") == ""


finite = st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cf")), max_size=20)
documents = st.recursive(finite, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cf")), max_size=8),
                                           inner, max_size=4), max_leaves=20)


@settings(max_examples=500)
@given(documents)
def test_every_clean_document_reads_back_unchanged(document):
    assert loads(json.dumps(document)) == document


@settings(max_examples=500)
@given(documents, st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]))
def test_a_non_finite_number_anywhere_is_refused(document, token):
    marker = "\x01"  # a control character: never in a generated document
    text = json.dumps({"id": "x", "doc": document, "z": [1, {"t": marker}]}).replace('"\\u0001"', token)
    with pytest.raises(StrictJsonError, match=r"z\[1\]\.t: \S+ is not a finite number"):
        loads(text)


def test_throttled_logs_the_first_then_one_per_interval_with_a_count():
    lines: list[str] = []
    throttled = Throttled(lines.append, interval=10)
    for i in range(1000):
        throttled("refused", now=i * 0.001)
    throttled("refused", now=11.0)
    assert lines == ["refused", "refused (999 more refused since the last line)"]

