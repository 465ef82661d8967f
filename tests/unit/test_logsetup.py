"""The log formatter: text from outside cannot break or disguise a log line."""


def test_log_lines_escape_what_outside_text_could_hide_or_break(tmp_path):
    """A lone surrogate would fail the UTF-8 log file's write; U+202E and CR would disguise the line."""
    import logging

    from doorphoned.core.logsetup import EscapingFormatter, escaped

    assert escaped("plain text: ok") == "plain text: ok"
    assert escaped("a\udfffb\u202ec\rd\x00e\nf") == "a\\udfffb\\u202ec\\rd\\x00e\nf"
    record = logging.LogRecord("camera", logging.WARNING, __file__, 1, "refused: %s", ("x\udfff\u202e",), None)
    line = EscapingFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == "WARNING camera: refused: x\\udfff\\u202e"
    line.encode("utf-8")  # what the rotating log file does with it: no UnicodeEncodeError
