"""records.py: bytes of a revision -> one Record or Reject per non-blank line (SPEC 1 and 7)."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmdb_async.records import MAX_NAME, MAX_VALUE, AliasScanner, Item, LineDecoder, Record, Reject

T = 1_325_376_000  # 2012-01-01 00:00:00 UTC
T_MIN = -30_610_224_000  # 1000-01-01 00:00:00 UTC
T_MAX = 253_402_300_799  # 9999-12-31 23:59:59 UTC

REASONS = {
    "not JSON",
    "not an object",
    "number out of range",
    "nested too deeply",
    "no _p",
    "_p is not a string or integer",
    "no _p2",
    "_p2 is not a string or integer",
    "no usable _t",
    "_t outside DATETIME range",
    "unusable _n",
    "key longer than 255 characters",
    "identity longer than 255 characters",
    "event name longer than 255 characters",
}


def decode(data: bytes, start: int = 0) -> list[Item]:
    """Items of a whole object fed in one chunk."""
    decoder = LineDecoder(start)
    return decoder.feed(data) + decoder.flush()


def one(line: bytes) -> Item:
    """The single item of one line (a newline is added)."""
    items = decode(line + b"\n")
    assert len(items) == 1, items
    return items[0]


def record(line: bytes | dict[str, Any]) -> Record:
    """The Record of one line, given as bytes or as an object to encode."""
    item = one(line if isinstance(line, bytes) else json.dumps(line).encode())
    assert isinstance(item, Record), item
    return item


def reject(line: bytes | dict[str, Any]) -> Reject:
    """The Reject of one line, given as bytes or as an object to encode."""
    item = one(line if isinstance(line, bytes) else json.dumps(line).encode())
    assert isinstance(item, Reject), item
    return item


def value(text: bytes) -> str | None:
    """The decoded value of property "v" written as raw JSON bytes `text`."""
    rec = record(b'{"_p":"u","_t":1325376000,"v":' + text + b"}")
    assert [key for key, _ in rec.props] == ["v"]
    return rec.props[0][1]


def line_spans(data: bytes, start: int = 0) -> list[tuple[int, int]]:
    """(offset, end) of every non-blank line, computed independently of the decoder."""
    spans = []
    offset = start
    for piece in re.findall(rb"[^\n]*\n|[^\n]+$", data):
        text = piece.removeprefix(BOM) if offset == 0 else piece  # a mark opens the object
        if text.strip(b" \t\r\n"):
            spans.append((offset, offset + len(piece)))
        offset += len(piece)
    return spans


def spans(items: list[Item]) -> list[tuple[int, int]]:
    return [(item.offset, item.end) for item in items]


# --- kinds (SPEC 1) -------------------------------------------------------------------------


def test_event_has_every_key_but_p_t_n_as_props_in_file_order() -> None:
    rec = record(b'{"z":"1","_p":"u","a":"2","_n":"Signed Up","_t":1325376000,"m":"3"}')
    assert (rec.p, rec.p2, rec.n, rec.t) == ("u", None, "Signed Up", T)
    assert rec.props == [("z", "1"), ("a", "2"), ("m", "3")]
    assert rec.truncated == 0


def test_property_set_has_every_key_but_p_t_as_props() -> None:
    rec = record({"_p": "u", "_t": T, "plan": "gold", "age": 33})
    assert (rec.p2, rec.n) == (None, None)
    assert rec.props == [("plan", "gold"), ("age", "33")]


def test_mobile_sdk_keys_are_ordinary_properties() -> None:
    rec = record({"_p": "u", "_t": T, "_c": "x", "_server_timestamp": 1325376001, "_n": "e"})
    assert rec.props == [("_c", "x"), ("_server_timestamp", "1325376001")]


def test_alias_keeps_both_identities_and_no_props() -> None:
    rec = record({"_p": "anon-1", "_p2": "bob@example.com", "_t": T, "extra": "ignored"})
    assert (rec.p, rec.p2, rec.n, rec.props, rec.t) == ("anon-1", "bob@example.com", None, [], T)


def test_alias_with_n_is_still_an_alias() -> None:
    rec = record({"_p": "a", "_p2": "b", "_n": "Signed Up", "_t": T})
    assert (rec.p2, rec.n, rec.props) == ("b", None, [])


def test_alias_ignores_other_keys_even_unusable_ones() -> None:
    # SPEC 7: keys other than _p, _p2, _t are ignored, so they cannot reject the line either.
    rec = record({"_p": "a", "_p2": "b", "_t": T, "k" * 300: "v", "_n": None})
    assert (rec.p, rec.p2) == ("a", "b")


def test_p2_follows_the_identity_rules() -> None:
    assert record({"_p": "a", "_p2": 42, "_t": T}).p2 == "42"
    assert reject({"_p": "a", "_p2": True, "_t": T}).reason == "_p2 is not a string or integer"
    assert reject({"_p": "a", "_p2": 1.5, "_t": T}).reason == "_p2 is not a string or integer"
    assert reject({"_p": "a", "_p2": "", "_t": T}).reason == "no _p2"
    assert reject({"_p": "a", "_p2": None, "_t": T}).reason == "no _p2"
    assert reject({"_p": "a", "_p2": "x" * 256, "_t": T}).reason == (
        "identity longer than 255 characters"
    )


def test_property_set_without_properties_is_a_record() -> None:
    rec = record({"_p": "u", "_t": T})
    assert (rec.n, rec.p2, rec.props) == (None, None, [])


# --- _p -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b'"Anon-X"', "Anon-X"), (b"123", "123"), (b"-7", "-7"), (b"007", None), (b"0", "0")],
)
def test_p_string_or_integer_as_decimal_text(raw: bytes, expected: str | None) -> None:
    item = one(b'{"_p":' + raw + b',"_t":1325376000}')
    if expected is None:  # a leading zero is not a JSON number
        assert isinstance(item, Reject) and item.reason == "not JSON"
    else:
        assert isinstance(item, Record) and item.p == expected


def test_p_big_integer_keeps_every_digit() -> None:
    digits = "9" * 40
    assert record(b'{"_p":' + digits.encode() + b',"_t":1}').p == digits


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"true", "_p is not a string or integer"),
        (b"false", "_p is not a string or integer"),
        (b"1.5", "_p is not a string or integer"),
        (b"1.0", "_p is not a string or integer"),
        (b"[1]", "_p is not a string or integer"),
        (b'{"a":1}', "_p is not a string or integer"),
        (b"null", "no _p"),
        (b'""', "no _p"),
    ],
)
def test_p_other_forms_reject(raw: bytes, reason: str) -> None:
    assert reject(b'{"_p":' + raw + b',"_t":1325376000}').reason == reason


def test_missing_p_rejects() -> None:
    assert reject({"_t": T, "_n": "e"}).reason == "no _p"


# --- _t -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"1325376000", T),
        (b"1325376000.7", T),
        (b"1.3253760007e9", T),
        (b"-5.5", -6),
        (b'"1325376000"', T),
        (b'"1325376000.7"', T),
        (b'"1325376000.9999999999"', T),  # exact: a float would round up to the next second
        (b'"0001325376000"', T),
        (b'"+1325376000"', T),
        (b'"-5"', -5),
        (b'"-5.0"', -5),
        (b'"-5.5"', -6),
        (b'"-0.5"', -1),
        (str(T_MIN).encode(), T_MIN),
        (str(T_MAX).encode(), T_MAX),
        (f'"{T_MAX}.9"'.encode(), T_MAX),
    ],
)
def test_t_forms_floor_to_the_second(raw: bytes, expected: int) -> None:
    assert record(b'{"_p":"u","_t":' + raw + b"}").t == expected


@pytest.mark.parametrize(
    "raw",
    [b"true", b"false", b"null", b'""', b'"abc"', b'"1e9"', b'" 5"', b'"5 "', b'"1_000"', b'"5."',
     b'".5"', '"\u0661\u0662"'.encode(), b"[1]", b'{"t":1}'],
)  # fmt: skip
def test_t_unusable_forms_reject(raw: bytes) -> None:
    assert reject(b'{"_p":"u","_t":' + raw + b"}").reason == "no usable _t"


def test_missing_t_rejects() -> None:
    assert reject({"_p": "u", "_n": "e"}).reason == "no usable _t"


@pytest.mark.parametrize(
    "raw",
    [str(T_MIN - 1).encode(), str(T_MAX + 1).encode(), f"{T_MIN}.5".encode(), b"1e300",
     f'"{T_MAX + 1}"'.encode(), b'"' + b"9" * 5000 + b'"', b'"-' + b"9" * 30 + b'.5"'],
)  # fmt: skip
def test_t_outside_datetime_range_rejects(raw: bytes) -> None:
    assert reject(b'{"_p":"u","_t":' + raw + b"}").reason == "_t outside DATETIME range"


# --- _n -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b'"Signed Up"', "Signed Up"), (b'"signed up "', "signed up "), (b"42", "42"),
     (b"2.5", "2.5"), (b"-1", "-1"), (b'""', "")],
)  # fmt: skip
def test_n_string_as_is_number_as_json_text(raw: bytes, expected: str) -> None:
    assert record(b'{"_p":"u","_t":1,"_n":' + raw + b"}").n == expected


@pytest.mark.parametrize("raw", [b"null", b"true", b"false", b"[]", b'{"a":1}'])
def test_n_other_forms_reject(raw: bytes) -> None:
    assert reject(b'{"_p":"u","_t":1,"_n":' + raw + b"}").reason == "unusable _n"


# --- lengths in code points -----------------------------------------------------------------


@pytest.mark.parametrize("char", ["k", "é", "€", "😀"])
def test_key_of_255_characters_passes_256_rejects(char: str) -> None:
    assert record({"_p": "u", "_t": T, char * MAX_NAME: "v"}).props == [(char * MAX_NAME, "v")]
    assert reject({"_p": "u", "_t": T, char * 256: "v"}).reason == (
        "key longer than 255 characters"
    )


@pytest.mark.parametrize("char", ["p", "é", "😀"])
def test_identity_of_255_characters_passes_256_rejects(char: str) -> None:
    assert record({"_p": char * MAX_NAME, "_t": T}).p == char * MAX_NAME
    assert reject({"_p": char * 256, "_t": T}).reason == "identity longer than 255 characters"
    assert record({"_p": "a", "_p2": char * MAX_NAME, "_t": T}).p2 == char * MAX_NAME


def test_integer_identity_length_counts_its_digits_and_sign() -> None:
    assert record(b'{"_p":' + b"9" * 255 + b',"_t":1}').p == "9" * 255
    assert record(b'{"_p":-' + b"9" * 254 + b',"_t":1}').p == "-" + "9" * 254
    for too_long in (b"1" + b"0" * 255, b"-" + b"9" * 255, b"9" * 4000):
        item = reject(b'{"_p":' + too_long + b',"_t":1}')
        assert item.reason == "identity longer than 255 characters"


@pytest.mark.parametrize("char", ["n", "é", "😀"])
def test_event_name_of_255_characters_passes_256_rejects(char: str) -> None:
    assert record({"_p": "u", "_t": T, "_n": char * MAX_NAME}).n == char * MAX_NAME
    assert reject({"_p": "u", "_t": T, "_n": char * 256}).reason == (
        "event name longer than 255 characters"
    )


def test_lengths_count_surrogate_pair_escapes_as_one_character() -> None:
    key = "\\ud83d\\ude00" * MAX_NAME
    rec = record(('{"_p":"u","_t":1,"' + key + '":"v"}').encode())
    assert rec.props == [("😀" * MAX_NAME, "v")]


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'"text"', "text"),
        (b"null", None),
        (b"3", "3"),
        (b"-3", "-3"),
        (b"2.5", "2.5"),
        (b"true", "true"),
        (b"false", "false"),
        (b'""', ""),
        (b"12345678901234567890123", "12345678901234567890123"),
        (b'{ "z" : 1 , "a" : [ 1 , "\\u00e9" , null , { } ] }', '{"z":1,"a":[1,"é",null,{}]}'),
        (b'["x", {"b": true, "a": 2.5}]', '["x",{"b":true,"a":2.5}]'),
        (b'{"q":"say \\"hi\\"\\n"}', '{"q":"say \\"hi\\"\\n"}'),
    ],
)
def test_values_text_null_or_compact_json(raw: bytes, expected: str | None) -> None:
    assert value(raw) == expected


def test_value_of_65535_characters_is_kept_whole() -> None:
    rec = record({"_p": "u", "_t": T, "v": "é" * MAX_VALUE})
    assert (rec.props, rec.truncated) == ([("v", "é" * MAX_VALUE)], 0)


def test_longer_values_are_cut_to_65535_characters_and_counted() -> None:
    long_list = list(range(20_000))  # its JSON text is ~110k characters
    rec = record({"_p": "u", "_t": T, "a": "😀" * (MAX_VALUE + 1), "b": "x", "c": long_list})
    assert rec.props == [
        ("a", "😀" * MAX_VALUE),
        ("b", "x"),
        ("c", json.dumps(long_list, separators=(",", ":"))[:MAX_VALUE]),
    ]
    assert rec.truncated == 2


def test_exact_strings_survive_quotes_backslashes_emoji_sql() -> None:
    nasty = [
        "Robert'); DROP TABLE `users`; --",
        'say "hi" \\ back\\slash \\303',
        "trailing space ",
        "Anon-X",
        "anon-x",
        "tab\tnew\nline\u0000nul",
        "emoji 😀👍🏽 and 中文",
    ]
    for text in nasty:
        rec = record({"_p": text, "_t": T, "_n": text, text: text})
        assert (rec.p, rec.n, rec.props) == (text, text, [(text, text)])


# --- strict JSON and non-objects ------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b'{"_p":"u","_t":1,"v":NaN}',
        b'{"_p":"u","_t":1,"v":Infinity}',
        b'{"_p":"u","_t":1,"v":-Infinity}',
        b'{"_p":"u","_t":1} x',
        b'{"_p":"u","_t":1}{"_p":"v","_t":1}',
        b"{'_p':'u','_t':1}",
        b'{_p:"u","_t":1}',
        b'{"_p":"u","_t":1,}',
        b'{"_p":"u","_t":1',
        b'{"_p":"u\tx","_t":1}',  # a raw control character in a string
        b'{"_p":"\\x41","_t":1}',  # a Python escape: nothing is decoded eval-like
        b"not json at all",
    ],
)
def test_not_strict_json_rejects(line: bytes) -> None:
    assert reject(line).reason == "not JSON"


@pytest.mark.parametrize("line", [b"[1,2]", b"3", b'"text"', b"null", b"true", b"[]"])
def test_json_that_is_not_an_object_rejects(line: bytes) -> None:
    assert reject(line).reason == "not an object"


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"9" * 5000])
def test_numbers_out_of_range_reject(number: bytes) -> None:
    assert reject(b'{"_p":"u","_t":1,"v":' + number + b"}").reason == "number out of range"


def test_deep_nesting_rejects_never_raises() -> None:
    assert reject(b'{"_p":"u","_t":1,"v":' + b"[" * 5000 + b"]" * 5000 + b"}").reason == (
        "nested too deeply"
    )
    for depth in range(800, 1100):  # around the recursion limit, in decode and in encode
        item = one(b'{"_p":"u","_t":1,"v":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}")
        assert isinstance(item, Record) or item.reason == "nested too deeply"


def test_reject_keeps_the_raw_line_without_its_ending() -> None:
    data = b'ok\n{"_p":"u"}\r\nnot \xff json'
    assert decode(data) == [
        Reject(0, 3, "not JSON", "ok"),
        Reject(3, 15, "no usable _t", '{"_p":"u"}'),
        Reject(15, 25, "not JSON", "not \ufffd json"),
    ]


REJECTABLE = (b'{"_p":"a","_t":1,"v":"caf\\303\\251"}\n\n{"_p":"b","_t":2}\r\nnot json\n'
              b'{"_n":"e","_p":"\xff","_t":3,"v":"x"}')  # invalid UTF-8, no final newline


@pytest.mark.parametrize("cut", range(len(REJECTABLE) + 1))
def test_a_record_of_the_last_feed_becomes_a_reject_of_its_raw_line(cut: int) -> None:
    """A line that decodes but cannot be stored (too wide for the database) is rejected with
    its raw text, wherever the chunks split it."""
    decoder = LineDecoder(100)
    found = []
    for step in (lambda: decoder.feed(REJECTABLE[:cut]), lambda: decoder.feed(REJECTABLE[cut:]),
                 decoder.flush):
        found += [decoder.reject(i, "too wide") if isinstance(i, Record) else i for i in step()]
    assert found == [
        Reject(100, 136, "too wide", '{"_p":"a","_t":1,"v":"caf\\303\\251"}'),
        Reject(137, 156, "too wide", '{"_p":"b","_t":2}'),
        Reject(156, 165, "not JSON", "not json"),
        Reject(165, 199, "too wide", '{"_n":"e","_p":"\ufffd","_t":3,"v":"x"}'),
    ]


# --- octal escapes (SPEC 7) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (rb'"caf\303\251"', "café"),
        (rb'"\351t\303\251"', "\ufffdté"),  # a lone Latin-1 byte is invalid UTF-8
        (rb'"\360\237\230\200!"', "😀!"),
        (rb'"a\\303"', "a\\303"),  # an escaped backslash, then the text "303"
        (rb'"a\\\303\251"', "a\\é"),  # an escaped backslash, then an octal escape
        (rb'"x\042y"', 'x"y'),  # an octal quote is content: the string goes on
        (rb'"x\042"', 'x"'),
        (rb'"x\134"', "x\\"),  # an octal backslash is content and escapes nothing
        (rb'"x\134\042"', 'x\\"'),
        (rb'"\000\011\037\177"', "\x00\t\x1f\x7f"),
        (rb'"\1234"', "S4"),  # exactly three digits
        (rb'"\101\102C"', "ABC"),
        (rb'"\u00e9\101"', "éA"),  # digits after \u are the escape's, not octal
        (rb'"\u0030123"', "0123"),
        (b'"caf\\303\xa9"', "café"),  # an octal byte joins a raw neighbour into UTF-8
        (rb'"\377"', "\ufffd"),
    ],
)
def test_octal_escapes_in_strings_are_bytes(raw: bytes, expected: str) -> None:
    assert value(raw) == expected


def test_octal_escapes_in_keys_and_identities() -> None:
    rec = record(rb'{"_p":"caf\303\251","_t":1,"_n":"\303\251","k\303\251":"\042"}')
    assert (rec.p, rec.n, rec.props) == ("café", "é", [("ké", '"')])


@pytest.mark.parametrize(
    "line",
    [
        rb'{"_p":"u","_t":1,"v":"\400"}',  # above \377: not octal, an invalid escape
        rb'{"_p":"u","_t":1,"v":"\38"}',  # 8 is not an octal digit
        rb'{"_p":"u","_t":1,"v":"\12"}',  # only two digits
        rb'{"_p":"u","_t":\061}',  # outside strings an octal escape is left alone
        rb'{"_p":"u",\042_t\042:1}',
    ],
)
def test_not_octal_escapes_stay_invalid_json(line: bytes) -> None:
    assert reject(line).reason == "not JSON"


def test_lone_surrogate_escapes_become_replacement_characters() -> None:
    assert value(rb'"a\ud83db"') == "a\ufffdb"
    assert value(rb'"a\ude00"') == "a\ufffd"
    assert value(rb'"\ud83d\ud83d\ude00"') == "\ufffd😀"
    assert value(rb'"\ud83d\ude00"') == "😀"


# --- invalid UTF-8 (SPEC 7) -----------------------------------------------------------------


def test_invalid_utf8_one_replacement_per_maximal_ill_formed_subsequence() -> None:
    dirty = b"a\xffb\xf0\x9f\x98c\xed\xa0\x80d\xc0\xafe\xe2\x82"
    expected = dirty.decode("utf-8", errors="replace")
    assert expected == "a\ufffdb\ufffdc\ufffd\ufffd\ufffdd\ufffd\ufffde\ufffd"
    rec = record(b'{"_p":"' + dirty + b'","_t":1,"k' + dirty + b'":"' + dirty + b'"}')
    assert (rec.p, rec.props) == (expected, [("k" + expected, expected)])


def test_invalid_utf8_and_octal_in_one_line() -> None:
    rec = record(b'{"_p":"caf\\303\\251 \xff","_t":1,"v":"\\303\xff"}')
    assert (rec.p, rec.props) == ("café \ufffd", [("v", "\ufffd\ufffd")])


# --- lines, offsets, CRLF, blank lines ------------------------------------------------------


def test_offsets_and_ends_are_byte_positions_including_line_endings() -> None:
    first = '{"_p":"é","_t":1}'.encode()  # 18 bytes, 17 characters
    second = b'{"_p":"v","_t":2}'  # 17 bytes
    data = first + b"\r\n" + b"  \n\n\t\r\n" + second
    items = decode(data, start=1000)
    assert spans(items) == [(1000, 1020), (1027, 1044)]
    assert [item.p for item in items if isinstance(item, Record)] == ["é", "v"]


BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark
MARKED = BOM + b'{"_p":"a","_t":1}\n{"_p":"b","_p2":"c","_t":2}\n'


def test_a_byte_order_mark_at_the_object_start_is_dropped_and_still_counted() -> None:
    plain = decode(MARKED.removeprefix(BOM))
    marked = decode(MARKED)
    assert [type(i) for i in marked] == [Record, Record]
    assert marked[0] == Record(0, 21, 1, "a", None, None, [], 0)  # offset 0: same row ids
    assert marked[1] == msgspec.structs.replace(plain[1], offset=plain[1].offset + 3,
                                                end=plain[1].end + 3)
    assert decode(BOM) == decode(BOM + b"\r\n") == []  # a mark alone is a blank line
    for cut in range(len(MARKED) + 1):  # the mark split across chunks, too
        decoder = LineDecoder()
        assert decoder.feed(MARKED[:cut]) + decoder.feed(MARKED[cut:]) + decoder.flush() == marked
    for cut in range(4):  # and the last line without its newline (from flush)
        decoder = LineDecoder()
        unterminated = (BOM + b'{"_p":"a","_t":1}')
        assert decoder.feed(unterminated[:cut]) + decoder.feed(unterminated[cut:]) == []
        assert decoder.flush() == [msgspec.structs.replace(marked[0], end=20)]


def test_a_byte_order_mark_elsewhere_stays_dirt() -> None:
    """Past byte 0 (a later line, or a read resumed from a later offset) a mark is no mark."""
    later = decode(b'{"_p":"a","_t":1}\n' + BOM + b'{"_p":"b","_t":2}\n')
    assert isinstance(later[1], Reject) and later[1].reason == "not JSON"
    [resumed] = decode(BOM + b'{"_p":"b","_t":2}\n', start=18)
    assert isinstance(resumed, Reject) and (resumed.offset, resumed.reason) == (18, "not JSON")
    [resumed] = decode(b'{"_p":"b","_t":2}\n', start=21)  # resumed past a first line with a mark
    assert isinstance(resumed, Record) and resumed.offset == 21


@pytest.mark.parametrize("cut", range(0, len(MARKED) + 1, 5))
def test_alias_scanner_drops_a_mark_exactly_where_the_decoder_does(cut: int) -> None:
    aliased = BOM + b'{"_p":"x","_p2":"y","_t":1}\n' + BOM + b'{"_p":"z","_p2":"w","_t":2}\n'
    scanner = AliasScanner()
    found = scanner.feed(aliased[:cut]) + scanner.feed(aliased[cut:]) + scanner.flush()
    assert [(r.p, r.p2) for r in found] == [("x", "y")]  # the second line is a reject
    assert [(i.p, i.p2) for i in decode(aliased) if isinstance(i, Record)] == [("x", "y")]
    second = aliased.index(b"\n") + 1
    resumed = AliasScanner(second)  # from the second line: its mark is not at byte 0
    assert resumed.feed(aliased[second:]) + resumed.flush() == []
    after_a_plain_line = b'{"_p":"a","_t":1}\n' + aliased[second:]  # first alias line found
    scanner = AliasScanner()
    assert scanner.feed(after_a_plain_line) + scanner.flush() == []


def test_blank_lines_give_no_items() -> None:
    assert decode(b"\n \n\t\n\r\n \t \r\n") == []
    assert decode(b"   ") == []


def test_last_line_without_newline_comes_from_flush() -> None:
    decoder = LineDecoder(5)
    assert decoder.feed(b'{"_p":"a","_t":1}\n{"_p":"b","_t":2}') == [
        Record(5, 23, 1, "a", None, None, [], 0)
    ]
    assert decoder.offset == 23
    assert decoder.flush() == [Record(23, 40, 2, "b", None, None, [], 0)]
    assert decoder.offset == 40
    assert decoder.flush() == []


CUT = b'{"_p":"caf\\303\\251","_t":1325376000,"_n":"e","v":[1,{"w":"\xff"}],"x":1e5}'


@pytest.mark.parametrize("cut", range(1, len(CUT)))
def test_an_unfinished_last_line_is_held_back_unless_final(cut: int) -> None:
    """Cut anywhere (mid-string, mid-escape, mid-number, mid-UTF-8): not a reject while the
    object may still grow; the offset stays before it until it is complete."""
    head = b'{"_p":"a","_t":1}\n'
    decoder = LineDecoder(10)
    assert decoder.feed(head + CUT[:cut]) == [Record(10, 28, 1, "a", None, None, [], 0)]
    assert decoder.flush(final=False) == []
    assert (decoder.offset, decoder.held) == (28, cut)
    resumed = LineDecoder(decoder.offset)  # the next run, once the line is complete
    [completed] = resumed.feed(CUT + b"\n") + resumed.flush(final=False)
    assert isinstance(completed, Record) and completed.offset == 28
    final = LineDecoder(28)  # a later revision exists: the cut line is a reject like any other
    [rejected] = final.feed(CUT[:cut]) + final.flush(final=True)
    assert isinstance(rejected, Reject) and rejected.reason == "not JSON"
    assert (final.offset, final.held) == (28 + cut, 0)


def test_an_unterminated_last_line_that_parses_is_imported_even_if_not_final() -> None:
    for line in (CUT, b'{"_t":1}', b"[1]", b'{"_p":"a","_t":1} ', b"  "):
        decoder = LineDecoder()
        items = decoder.feed(line) + decoder.flush(final=False)
        assert items == decode(line) and decoder.held == 0 and decoder.offset == len(line)


def test_lines_that_can_never_parse_are_held_back_until_final_too() -> None:
    """Cut short, any failure to parse may be a line still being written."""
    for line in (b"not json", nested(3000)[:-1], b'{"_p":"u","_t":1,"v":1e999'):
        decoder = LineDecoder()
        assert decoder.feed(line) + decoder.flush(final=False) == [] and decoder.held == len(line)


def test_offset_stays_at_the_last_complete_line_while_a_line_is_pending() -> None:
    decoder = LineDecoder(100)
    assert decoder.feed(b'{"_p":"a",') == []
    assert decoder.offset == 100
    assert decoder.feed(b'"_t":1}\r\n\n{"_p"') == [Record(100, 119, 1, "a", None, None, [], 0)]
    assert decoder.offset == 120  # past the blank line too


def test_crlf_lines_decode_like_lf_lines() -> None:
    lf = decode(b'{"_p":"a","_t":1,"v":"x"}\n')
    crlf = decode(b'{"_p":"a","_t":1,"v":"x"}\r\n')
    assert isinstance(lf[0], Record) and isinstance(crlf[0], Record)
    assert crlf[0].props == lf[0].props == [("v", "x")]
    assert (crlf[0].end, lf[0].end) == (27, 26)


DIRTY_EXPORT = b"".join(
    [
        b'{"_p":"anon-1","_t":1325376000,"_n":"Visited Site","URL":"http://x/?a=1&b=2"}\n',
        b"\n",
        b'{"_p":"caf\\303\\251","_t":"1325376000.5","k":"\\351t\\303\\251","q":"\\042"}\r\n',
        b'{"_p":7,"_p2":"bob","_t":1325376001.9}\r\n',
        b"not json at all\n",
        b'{"_p":"\xe2\x82\xac \xff \xf0\x9f\x98\x80","_t":1,"nested":{"b":[1,2.5,null]}}\n',
        b"   \t\r\n",
        b'{"_p":"x","_t":1,"a\\\\303":"\\\\\\303\\251","nul":"\\u0000"}\n',
        b'[1,2,3]\r\n',
        b'{"_p":"last","_t":1,"v":"no final newline \\ud83d\\ude00 \\ud800"}',
    ]
)  # fmt: skip


def test_dirty_export_decodes_line_by_line() -> None:
    items = decode(DIRTY_EXPORT)
    assert spans(items) == line_spans(DIRTY_EXPORT)
    assert [getattr(item, "reason", None) for item in items] == [
        None, None, None, "not JSON", None, None, "not an object", None,
    ]  # fmt: skip
    assert items[1] == Record(
        offset=79, end=152, t=T, p="café", p2=None, n=None,
        props=[("k", "\ufffdté"), ("q", '"')], truncated=0,
    )  # fmt: skip
    assert isinstance(items[2], Record) and (items[2].p, items[2].p2, items[2].t) == (
        "7", "bob", T + 1,
    )  # fmt: skip
    assert isinstance(items[4], Record) and items[4].p == "€ \ufffd 😀"
    assert items[4].props == [("nested", '{"b":[1,2.5,null]}')]
    assert isinstance(items[5], Record) and items[5].props == [
        ("a\\303", "\\é"),
        ("nul", "\x00"),
    ]
    assert isinstance(items[7], Record) and items[7].end == len(DIRTY_EXPORT)
    assert items[7].props == [("v", "no final newline 😀 \ufffd")]


def test_split_at_every_byte_offset_gives_the_same_items() -> None:
    whole = decode(DIRTY_EXPORT, start=7)
    for cut in range(len(DIRTY_EXPORT) + 1):
        decoder = LineDecoder(7)
        items = decoder.feed(DIRTY_EXPORT[:cut])
        assert decoder.offset == 7 + DIRTY_EXPORT.rfind(b"\n", 0, cut) + 1
        items += decoder.feed(DIRTY_EXPORT[cut:])
        items += decoder.flush()
        assert items == whole, cut


def test_feeding_one_byte_at_a_time_gives_the_same_items() -> None:
    decoder = LineDecoder()
    items: list[Item] = []
    for position in range(len(DIRTY_EXPORT)):
        items += decoder.feed(DIRTY_EXPORT[position : position + 1])
        complete = DIRTY_EXPORT.rfind(b"\n", 0, position + 1) + 1
        assert decoder.offset == complete  # resume point: just past the last complete line
    items += decoder.flush()
    assert items == decode(DIRTY_EXPORT)
    assert decoder.offset == len(DIRTY_EXPORT)


def test_empty_feeds_change_nothing() -> None:
    decoder = LineDecoder(3)
    assert decoder.feed(b"") == [] and decoder.flush() == [] and decoder.offset == 3


def test_a_multi_megabyte_line_is_cut_and_fed_in_chunks() -> None:
    big = "é" * 1_500_000  # 3 MB of UTF-8
    octal = b"\\303\\251" * 200_000  # 1.6 MB of octal escapes
    data = (
        json.dumps({"_p": "u", "_t": T, "big": big}, ensure_ascii=False).encode()
        + b'\n{"_p":"u","_t":1,"o":"'
        + octal
        + b'"}'
    )
    decoder = LineDecoder()
    items: list[Item] = []
    for start in range(0, len(data), 65_536):
        items += decoder.feed(data[start : start + 65_536])
    items += decoder.flush()
    assert spans(items) == line_spans(data)
    first, second = items
    assert isinstance(first, Record) and first.props == [("big", "é" * MAX_VALUE)]
    assert first.truncated == 1
    assert isinstance(second, Record) and second.props == [("o", "é" * MAX_VALUE)]


def test_the_json_decoder_is_built_once_not_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    real = msgspec.json.Decoder

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(msgspec.json, "Decoder", counting)
    assert len(decode((DIRTY_EXPORT + b"\n") * 20)) == 160
    assert built == []


# --- properties (hypothesis) ----------------------------------------------------------------

RESERVED = {"_p", "_p2", "_t", "_n"}
texts = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=12)
keys = texts.filter(lambda key: key not in RESERVED)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)


def compact(value: object) -> str | None:
    """The value text SPEC 1 and 7 ask for, computed with the json module."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def octal_json(value: object) -> str:
    """JSON text of `value` with every byte of every string written as an octal escape."""
    if isinstance(value, str):
        return '"' + "".join(f"\\{byte:03o}" for byte in value.encode()) + '"'
    if isinstance(value, list):
        return "[" + ",".join(octal_json(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (octal_json(key) + ":" + octal_json(item) for key, item in value.items())
        return "{" + ",".join(pairs) + "}"
    return json.dumps(value)


@st.composite
def export_objects(draw: st.DrawFn) -> tuple[dict[str, Any], Record]:
    """A random valid line as an object, and the Record it must decode to (offset 0)."""
    props = draw(st.dictionaries(keys, json_values, max_size=5))
    p = draw(st.text(min_size=1, max_size=MAX_NAME) | st.integers(-(10**30), 10**30))
    p_text = str(p) if isinstance(p, int) else p
    t = draw(st.integers(T_MIN, T_MAX))
    n = draw(st.none() | st.text(max_size=MAX_NAME))
    pairs = list(props.items())
    for key, item in (("_p", p), ("_t", t)) + ((("_n", n),) if n is not None else ()):
        pairs.insert(draw(st.integers(0, len(pairs))), (key, item))
    expected = Record(0, 0, t, p_text, None, n, [(k, compact(v)) for k, v in props.items()], 0)
    return dict(pairs), expected


@given(export_objects(), st.booleans(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_random_objects_decode_to_their_record(
    case: tuple[dict[str, Any], Record], ascii_only: bool, crlf: bool
) -> None:
    obj, expected = case
    line = json.dumps(obj, ensure_ascii=ascii_only).encode() + (b"\r\n" if crlf else b"\n")
    expected.end = len(line)
    assert decode(line) == [expected]


@given(export_objects())
@settings(max_examples=150, deadline=None)
def test_octal_escaped_objects_decode_like_plain_ones(case: tuple[dict[str, Any], Record]) -> None:
    obj, expected = case
    line = octal_json(obj).encode()
    expected.end = len(line)
    assert decode(line) == [expected]


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_values_are_json_text_of_the_same_number(number: float) -> None:
    text = value(json.dumps(number).encode())
    assert text is not None and json.loads(text) == number and " " not in text


def check_decoding(data: bytes, start: int = 0) -> list[Item]:
    """Decode `data` in one chunk; check the invariants that every input must keep."""
    items = decode(data, start)
    assert spans(items) == line_spans(data, start)  # one item per non-blank line, in order
    for item in items:
        if isinstance(item, Reject):
            line = data[item.offset - start : item.end - start].removesuffix(b"\n")
            line = line.removeprefix(BOM) if item.offset == 0 else line
            assert item.reason in REASONS
            assert item.raw == line.removesuffix(b"\r").decode("utf-8", errors="replace")
        else:
            assert T_MIN <= item.t <= T_MAX and 0 < len(item.p) <= MAX_NAME
            assert all(len(key) <= MAX_NAME for key, _ in item.props)
            assert all(v is None or len(v) <= MAX_VALUE for _, v in item.props)
    return items


@given(st.binary(max_size=400), st.integers(0, 10**12))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_raise(data: bytes, start: int) -> None:
    check_decoding(data, start)


def nested(depth: int) -> bytes:
    return b'{"_p":"u","_t":1,"v":' + b"[" * depth + b"]" * depth + b"}"


def one_line(raw: bytes) -> bytes:
    return raw.replace(b"\n", b"")


dirty_lines = st.one_of(
    export_objects().map(lambda case: json.dumps(case[0], ensure_ascii=False).encode()),
    export_objects().map(lambda case: octal_json(case[0]).encode()),
    export_objects().map(lambda case: json.dumps(case[0]).encode().replace(b"\\u", b"\\")),
    st.binary(max_size=60).map(one_line),
    st.binary(max_size=20).map(lambda raw: b'{"_p":"' + one_line(raw) + b'","_t":1}'),
    st.integers(0, 3000).map(nested),
    st.sampled_from([b"", b" ", b"\r", b"\x00", b'{"_p":"\x00","_t":1}', b"\\303", b'"\\377"']),
)

line_endings = st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=12, max_size=12)


@given(st.lists(dirty_lines, max_size=12), line_endings, st.booleans(), st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mixed_dirt_keeps_every_invariant_and_splits_anywhere(
    lines: list[bytes], endings: list[bytes], final_newline: bool, data: st.DataObject
) -> None:
    body = b"".join(line + ending for line, ending in zip(lines, endings, strict=False))
    if not final_newline and body:
        body = body[: -len(endings[len(lines) - 1])]
    whole = check_decoding(body)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=4)))
    decoder = LineDecoder()
    items: list[Item] = []
    for begin, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        items += decoder.feed(body[begin:end])
    assert items + decoder.flush() == whole


# SPEC 5 promise: nothing in the input can crash the decoder. Mixtures of everything hostile at
# once: any JSON (not only objects), bytes spliced anywhere into valid lines (NUL, invalid
# UTF-8, stray backslashes and octal-looking escapes), huge lines, deep mixed nesting.
splice_bytes = st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\", b"\\400",
                                b"\\3", b"\\303\\251", b"\\\\303", b'"', b"\x1f", b"\r"])


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    line = json.dumps(draw(export_objects())[0], ensure_ascii=draw(st.booleans())).encode()
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(splice_bytes) + line[at:]
    return line


def deep_mixed(depth: int, objects_first: bool) -> bytes:
    opens = b"".join(b'{"a":' if (i % 2 == 0) == objects_first else b"[" for i in range(depth))
    closes = b"".join(b"}" if (i % 2 == 0) == objects_first else b"]" for i in reversed(range(depth)))
    return b'{"_p":"u","_t":1,"v":' + opens + b"1" + closes + b"}"


hostile_lines = st.one_of(
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
    spliced(),
    st.builds(deep_mixed, st.integers(1, 5000), st.booleans()),
    st.integers(60_000, 400_000).map(lambda n: b'{"_p":"u","_t":1,"v":"' + b"\\303\\251" * (n // 8)
                                       + b"x" * (n % 8) + b'"}'),
    st.integers(10_000, 100_000).map(lambda n: b'{"_p":"' + b"\xff" * n + b'","_t":1}'),
    st.binary(min_size=1, max_size=200).map(one_line),
)


@given(st.lists(hostile_lines, min_size=1, max_size=8), line_endings, st.data())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_mixtures_never_raise_and_give_a_record_or_a_reason_per_line(
    lines: list[bytes], endings: list[bytes], data: st.DataObject
) -> None:
    body = b"".join(one_line(line) + ending for line, ending in zip(lines, endings, strict=False))
    whole = check_decoding(body)
    cut = data.draw(st.integers(0, len(body)))
    decoder = LineDecoder()
    assert decoder.feed(body[:cut]) + decoder.feed(body[cut:]) + decoder.flush() == whole


# -- AliasScanner: a first import's read-ahead of alias records ---------------------------------

SCANNED = (
    b'{"_p":"anon-1","_p2":"42","_t":1}\n'
    b'{"_n":"signed up","_p":"anon-1","_t":2,"note":"mentions \\"_p2\\" in a value"}\n'
    b'{"_p":"anon-2","_p2":"caf\\303\\251","_t":3}\r\n'
    b'{"_p":"x","_p2":' + b'"y' * 200 + b'","_t":4}\n'  # a reject: not JSON
    b'{"_p":"anon-3","\\u005fp2":"7","_t":5}\n'  # escaped key: an alias the scan cannot see
    b'{"_p":"anon-4","_p2":"anon-5","_t":6}'  # no final newline
)


@pytest.mark.parametrize("cut", range(0, len(SCANNED) + 1, 7))
def test_alias_scanner_finds_the_decoders_alias_records_wherever_the_chunks_split(cut: int) -> None:
    scanner = AliasScanner()
    found = scanner.feed(SCANNED[:cut]) + scanner.feed(SCANNED[cut:]) + scanner.flush()
    decoder = LineDecoder()
    decoded = [i for i in decoder.feed(SCANNED) + decoder.flush()
               if isinstance(i, Record) and i.p2 is not None]
    pairs = [(r.p, r.p2, r.t) for r in found]
    assert pairs == [("anon-1", "42", 1), ("anon-2", "café", 3), ("anon-4", "anon-5", 6)]
    # Exactly the decoder's alias records, less the one whose key is escaped.
    assert pairs == [(r.p, r.p2, r.t) for r in decoded if r.p != "anon-3"]
