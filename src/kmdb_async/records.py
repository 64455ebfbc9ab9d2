"""Pure decoding of one revision object: bytes in, one `Record` or `Reject` per line out.

A revision is text with one JSON object per line (SPEC sections 1 and 7). `LineDecoder`
takes the object's bytes in chunks of any size and hands out, in file order, one item per
non-blank line, each carrying the byte offsets of its line so that a reader can resume an
object exactly where a committed prefix ends.

The hot path is one `msgspec` decode per line plus a dict walk. Only a line that fails to
decode takes the slow path, which repairs the known dirt and decodes again:

- octal escapes (``"caf\\303\\251"``): a backslash and three octal digits, value <= 0o377,
  inside a JSON string, is one raw byte;
- lone UTF-16 surrogate escapes (``"\\ud83d"``) become U+FFFD, like broken UTF-8 bytes;
- invalid UTF-8 becomes one U+FFFD per maximal ill-formed subsequence;
- a UTF-8 byte-order mark at byte 0 of the object is dropped (offsets still count it, so the
  first line keeps offset 0 and its row ids, with or without the mark).

Nothing here does I/O and nothing raises on any input bytes.
"""

import math
import re
from typing import Final, TypeAlias

import msgspec

MAX_NAME: Final = 255
"""Most characters (code points) in a key, an event name or an identity."""

MAX_VALUE: Final = 65_535
"""Most characters (code points) kept of a property value; longer values are cut."""

T_MIN: Final = -30_610_224_000
"""Unix seconds of '1000-01-01 00:00:00' UTC, the first MariaDB DATETIME."""

T_MAX: Final = 253_402_300_799
"""Unix seconds of '9999-12-31 23:59:59' UTC, the last MariaDB DATETIME."""


class Record(msgspec.Struct, gc=False):
    """One accepted line.

    Kind: alias if p2 is not None, else event if n is not None, else property set.
    """

    offset: int  # byte offset of the line's first byte within the revision object
    end: int  # byte offset just past the line's newline (== offset of the next line)
    t: int  # Unix seconds (floats / numeric strings floored)
    p: str  # identity (_p); a JSON integer becomes its decimal text
    p2: str | None  # second identity (_p2) for alias records, else None
    n: str | None  # event name (_n) for events, else None
    props: list[tuple[str, str | None]]  # (key, value text or None for JSON null), file order
    truncated: int  # how many values in props were cut to MAX_VALUE characters


class Reject(msgspec.Struct, gc=False):
    """One line that cannot be imported, with why, kept whole for the rejects file."""

    offset: int  # byte offset of the line's first byte within the revision object
    end: int  # byte offset just past the line's newline
    reason: str  # short human reason, e.g. "not JSON", "no _p", "no usable _t"
    raw: str  # the line as UTF-8 with errors="replace", without its line ending


Item: TypeAlias = Record | Reject

# Built once: constructing them per line would cost more than decoding a short line.
_DECODER: Final = msgspec.json.Decoder()
_ENCODER: Final = msgspec.json.Encoder()

# What a failed decode of bytes can raise: malformed JSON or out-of-range numbers
# (DecodeError and its subclass ValidationError), invalid UTF-8 (UnicodeDecodeError, a
# ValueError) and nesting deeper than the interpreter's recursion limit.
_DECODE_ERRORS: Final = (msgspec.DecodeError, ValueError, RecursionError)

# Reasons of a line that does not parse (cut short, it may parse once it is complete).
UNPARSED: Final = frozenset(("not JSON", "number out of range", "nested too deeply"))

_JSON_SPACE: Final = b" \t\r"  # JSON whitespace other than the "\n" lines are split on
_BOM: Final = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, which some tools write first
_EVENT_SKIP: Final = frozenset(("_p", "_t", "_n"))
_SET_SKIP: Final = frozenset(("_p", "_t"))

# A decimal time string such as "1325376000", "1325376000.7" or "-5": sign, whole, fraction.
_DECIMAL: Final = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]+))?")

# One JSON string token, or the rest of the line if it is unclosed. Scanning from the line's
# start, every match begins at a quote outside any string, since each match swallows its
# string's escape pairs whole.
_STRING: Final = re.compile(rb'"(?:[^"\\]+|\\.)*"?', re.DOTALL)

# One escape pair inside a string, tried in this order: a valid surrogate pair (kept), a lone
# surrogate (group 1), an octal byte (group 2), any other escape (kept). Consuming escapes in
# pairs is what makes `\\303` an escaped backslash followed by "303", not an octal escape.
_ESCAPE: Final = re.compile(
    rb"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|(u[dD][89a-fA-F][0-9a-fA-F]{2})|([0-3][0-7]{2})|.)",
    re.DOTALL,
)


def _octal_replacement(byte: int) -> bytes:
    """What the string bytes of one octal escape of value `byte` (0..255) become in JSON."""
    if byte >= 0x80:
        return bytes((byte,))  # joins its neighbours into UTF-8, repaired afterwards
    if byte in (0x22, 0x5C):
        return b"\\" + bytes((byte,))  # an octal quote or backslash is content, not syntax
    if byte < 0x20:
        return b"\\u%04x" % byte  # raw control characters are not allowed in JSON strings
    return bytes((byte,))


_OCTAL: Final = tuple(_octal_replacement(byte) for byte in range(256))


class _Invalid(Exception):
    """Why a decoded line cannot be a record; caught within this module only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LineDecoder:
    """Incremental decoder of one revision object: feed(chunk) any number of times, then flush().

    Chunks may split lines (and UTF-8 sequences, and escapes) anywhere; the items are the
    same as for the whole object in one chunk. Offsets count bytes from the object's start.
    """

    def __init__(self, start: int = 0) -> None:
        """Decode from byte offset `start` of the object: the first byte fed is that byte."""
        self._pending = bytearray()  # bytes after the last complete line handed out
        self._offset = start  # byte offset of self._pending[0] within the object
        self._block = b""  # the lines handed out last (for reject), from byte offset _base
        self._base = start

    @property
    def offset(self) -> int:
        """Byte offset just past the last complete line handed out (where to resume)."""
        return self._offset

    @property
    def held(self) -> int:
        """Bytes after ``offset`` not handed out: after ``flush(final=False)``, the unfinished
        last line held back."""
        return len(self._pending)

    def feed(self, chunk: bytes) -> list[Item]:
        """Take the next bytes; return the items of every line now complete, in file order."""
        last_newline = chunk.rfind(b"\n")
        if last_newline < 0:
            self._pending += chunk  # amortised O(1), so byte-at-a-time feeding stays linear
            return []
        cut = len(self._pending) + last_newline + 1
        self._pending += chunk
        block = bytes(self._pending[:cut])
        del self._pending[:cut]
        lines = block.split(b"\n")
        lines.pop()  # the empty piece after the block's final newline
        self._block, self._base = block, self._offset
        return self._decode_lines(lines)

    def flush(self, final: bool = True) -> list[Item]:
        """End of the bytes: return the item of the last line if it lacked a newline.

        With ``final`` False the object may still grow (it is the export's latest revision):
        a last line without a newline that does not parse is then unfinished, not a reject.
        It is held back (``held`` bytes), and ``offset`` stays before it.
        """
        if not self._pending:
            return []
        line, start = bytes(self._pending), self._offset
        self._block, self._base = line, start
        items = self._decode_lines([line], newline=0)
        if not final and len(items) == 1 and isinstance(items[0], Reject) and (
                items[0].reason in UNPARSED):
            self._offset = start
            return []
        self._pending.clear()
        return items

    def reject(self, record: Record, reason: str) -> Reject:
        """A Reject of the line of ``record``, one of the last ``feed`` or ``flush``: for a
        line that decodes but cannot be stored (its raw text is still at hand here)."""
        line = self._block[record.offset - self._base : record.end - self._base]
        return _reject(record.offset, record.end, line.removesuffix(b"\n"), reason)

    def _decode_lines(self, lines: list[bytes], newline: int = 1) -> list[Item]:
        """Items of consecutive lines starting at self._offset; advance it past them.

        `lines` are without their newline; `newline` is its length in bytes (1, or 0 for the
        last line of an object that lacks one).
        """
        # One decode per line rather than Decoder.decode_lines over the block: decode_lines
        # also accepts two objects on one line or one object across lines, and the per-line
        # check that would map its items back to lines cost more than it saved (measured).
        items: list[Item] = []
        append = items.append
        decode = _DECODER.decode
        offset = self._offset
        for line in lines:
            end = offset + len(line) + newline
            try:
                obj = decode(line)  # a trailing "\r" of CRLF is JSON whitespace
            except _DECODE_ERRORS:
                item = _decode_dirty_line(line, offset, end)
                if item is not None:
                    append(item)
            else:
                try:  # the end of _decode_dirty_line, inlined: one call fewer per clean line
                    append(_record(obj, offset, end))
                except _Invalid as invalid:
                    append(_reject(offset, end, line, invalid.reason))
            offset = end
        self._offset = offset
        return items


def _decode_dirty_line(line: bytes, offset: int, end: int) -> Item | None:
    """Slow path for a line that failed to decode: repair the known dirt, decode again."""
    if offset == 0 and line.startswith(_BOM):  # only at the object's start: elsewhere it is dirt
        line = line[len(_BOM):]
    if not line.strip(_JSON_SPACE):
        return None
    repaired = _STRING.sub(_repair_string, line) if b"\\" in line else line
    try:
        obj = _DECODER.decode(repaired.decode("utf-8", errors="replace"))
    except msgspec.ValidationError:
        return _reject(offset, end, line, "number out of range")
    except (msgspec.DecodeError, ValueError):
        return _reject(offset, end, line, "not JSON")
    except RecursionError:
        return _reject(offset, end, line, "nested too deeply")
    try:
        return _record(obj, offset, end)
    except _Invalid as invalid:
        return _reject(offset, end, line, invalid.reason)


def _repair_string(match: re.Match[bytes]) -> bytes:
    """One JSON string token with octal escapes and lone surrogates made into valid JSON."""
    token = match.group()
    return _ESCAPE.sub(_repair_escape, token) if b"\\" in token else token


def _repair_escape(match: re.Match[bytes]) -> bytes:
    """One escape pair: an octal escape becomes its byte, a lone surrogate U+FFFD."""
    octal = match.group(2)
    if octal is not None:
        return _OCTAL[int(octal, 8)]
    if match.group(1) is not None:
        return b"\\ufffd"
    return match.group()


def _reject(offset: int, end: int, line: bytes, reason: str) -> Reject:
    """A Reject of `line`, keeping its text without a CRLF's carriage return."""
    if line.endswith(b"\r"):
        line = line[:-1]
    return Reject(offset, end, reason, line.decode("utf-8", errors="replace"))


def _record(obj: object, offset: int, end: int) -> Record:
    """Record of a decoded line (SPEC 1: alias, else event, else property set); raise _Invalid."""
    if type(obj) is not dict:
        raise _Invalid("not an object")
    p = obj.get("_p")
    if type(p) is not str or not p or len(p) > MAX_NAME:
        p = _identity(p, "_p")  # the rare forms and the rejects
    t = obj.get("_t")
    if type(t) is not int or not T_MIN <= t <= T_MAX:
        t = _time(t)
    if "_p2" in obj:
        # Every other key of an alias record, _n included, is ignored (SPEC 7).
        return Record(offset, end, t, p, _identity(obj["_p2"], "_p2"), None, [], 0)
    if "_n" in obj:
        n: str | None = _event_name(obj["_n"])
        skip = _EVENT_SKIP
    else:
        n = None
        skip = _SET_SKIP
    props: list[tuple[str, str | None]] = []
    truncated = 0
    for key, value in obj.items():
        if key in skip:
            continue
        if len(key) > MAX_NAME:
            raise _Invalid("key longer than 255 characters")
        if type(value) is not str:
            if value is None:
                props.append((key, None))
                continue
            value = _compact_json(value)
        if len(value) > MAX_VALUE:
            value = value[:MAX_VALUE]
            truncated += 1
        props.append((key, value))
    return Record(offset, end, t, p, None, n, props, truncated)


def _identity(value: object, field: str) -> str:
    """An identity's text: a non-empty string, or a JSON integer's decimal text."""
    if type(value) is str:
        text = value
    elif type(value) is int:  # `type` rather than isinstance: true/false are not identities
        text = str(value)  # cannot hit the digit limit: msgspec decodes no longer integers
    elif value is None:  # missing, or null
        raise _Invalid(f"no {field}")
    else:
        raise _Invalid(f"{field} is not a string or integer")
    if not text:
        raise _Invalid(f"no {field}")
    if len(text) > MAX_NAME:
        raise _Invalid("identity longer than 255 characters")
    return text


def _time(value: object) -> int:
    """Unix seconds of a `_t` value: an integer, or a float or decimal string floored.

    A JSON float is floored as the nearest double (``1325376000.9999999999`` is the double
    1325376001.0); a decimal string is floored exactly.
    """
    if type(value) is int:
        seconds = value
    elif type(value) is float:  # always finite: strict JSON has no NaN or Infinity
        seconds = math.floor(value)
    elif type(value) is str:
        seconds = _time_from_text(value)
    else:
        raise _Invalid("no usable _t")
    if not T_MIN <= seconds <= T_MAX:
        raise _Invalid("_t outside DATETIME range")
    return seconds


def _time_from_text(text: str) -> int:
    """Unix seconds of a decimal string such as "1325376000.7" or "-5", floored exactly."""
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise _Invalid("no usable _t")
    sign, whole, fraction = match.groups()
    whole = whole.lstrip("0")
    if len(whole) > 15:  # far outside DATETIME; also keeps int() clear of its digit limit
        raise _Invalid("_t outside DATETIME range")
    seconds = int(whole or "0")
    if sign == "-":
        # Exact decimal flooring: a float would round "…0.9999999999" up to the next second.
        seconds = -seconds - (1 if fraction and fraction.strip("0") else 0)
    return seconds


def _event_name(value: object) -> str:
    """An event name: a string as is, a JSON number as its compact JSON text."""
    if type(value) is str:
        name = value
    elif type(value) is int or type(value) is float:
        name = _compact_json(value)
    else:
        raise _Invalid("unusable _n")
    if len(name) > MAX_NAME:
        raise _Invalid("event name longer than 255 characters")
    return name


def _compact_json(value: object) -> str:
    """Compact JSON text of a decoded value, key order kept, non-ASCII characters unescaped."""
    try:
        return _ENCODER.encode(value).decode()
    except RecursionError:
        # Encoding runs a few frames deeper than decoding did, so the limit can bite here.
        raise _Invalid("nested too deeply") from None
    except ValueError:
        raise _Invalid("number out of range") from None


_ALIAS_KEY = b'"_p2"'


class AliasScanner:
    """The alias records of an object, found without decoding the rest (a first import reads
    them ahead, so that its rows get their final canonical users).

    Only lines that contain ``"_p2"`` are decoded, exactly as LineDecoder decodes them; an
    alias whose key is written with escapes (``"\\u005fp2"``) is not found here, which costs
    the import a re-pointing pass for it, never a wrong row. Offsets are not kept, but the
    first line found starts at its own offset, so that a byte-order mark is dropped exactly
    where LineDecoder drops it.
    """

    def __init__(self, start: int = 0) -> None:
        """Scan from byte offset ``start`` of the object (the first byte fed is that byte)."""
        self._pending = bytearray()  # bytes after the last newline seen
        self._offset = start  # byte offset of self._pending[0] within the object

    def feed(self, chunk: bytes) -> list[Record]:
        last_newline = chunk.rfind(b"\n")
        if last_newline < 0:
            self._pending += chunk
            return []
        self._pending += chunk[: last_newline + 1]
        block, offset = bytes(self._pending), self._offset
        self._pending[:] = chunk[last_newline + 1 :]
        self._offset += len(block)
        return self._aliases(block, offset)

    def flush(self) -> list[Record]:
        block, offset = bytes(self._pending) + b"\n", self._offset
        self._offset += len(self._pending)
        self._pending.clear()
        return self._aliases(block, offset)

    @staticmethod
    def _aliases(block: bytes, offset: int) -> list[Record]:
        """Alias records among the lines of ``block`` (which ends with a newline and starts at
        byte ``offset`` of the object)."""
        lines: list[bytes] = []
        found = block.find(_ALIAS_KEY)
        first = -1
        while found >= 0:
            start = block.rfind(b"\n", 0, found) + 1
            end = block.index(b"\n", found)
            lines.append(block[start:end])
            first = start if first < 0 else first
            found = block.find(_ALIAS_KEY, end)
        if not lines:
            return []
        items = LineDecoder(offset + first)._decode_lines(lines)
        return [item for item in items if isinstance(item, Record) and item.p2 is not None]
