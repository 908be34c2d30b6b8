# json.loads for the qemu_m0 port, whose sdist has no extmod/modjson.c.
#
# The HAL reads board.json through it (hal_virtual: the simulator's HELLO
# carries the file). RFC 8259 values: objects, arrays, strings with their
# escapes (\uXXXX of the basic plane only), numbers, true/false/null;
# anything else raises ValueError naming the offset. Not a serialiser: the firmware never writes JSON.

_WS = " \t\r\n"
_ESC = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_NUM = "+-0123456789.eE"


def loads(text):
    if isinstance(text, (bytes, bytearray)):
        text = text.decode()
    value, i = _value(text, _skip(text, 0))
    i = _skip(text, i)
    if i != len(text):
        raise ValueError("json: extra data at offset %d" % i)
    return value


def _skip(s, i):
    n = len(s)
    while i < n and s[i] in _WS:
        i += 1
    return i


def _value(s, i):
    if i >= len(s):
        raise ValueError("json: value expected at offset %d" % i)
    c = s[i]
    if c == "{":
        return _object(s, i + 1)
    if c == "[":
        return _array(s, i + 1)
    if c == '"':
        return _string(s, i + 1)
    for word, val in (("true", True), ("false", False), ("null", None)):
        if s.startswith(word, i):
            return val, i + len(word)
    return _number(s, i)


def _object(s, i):
    out = {}
    i = _skip(s, i)
    more = i >= len(s) or s[i] != "}"
    i = i if more else i + 1
    while more:
        if i >= len(s) or s[i] != '"':
            raise ValueError("json: key expected at offset %d" % i)
        key, i = _string(s, i + 1)
        i = _skip(s, i)
        if i >= len(s) or s[i] != ":":
            raise ValueError("json: ':' expected at offset %d" % i)
        out[key], i = _value(s, _skip(s, i + 1))
        more, i = _after_item(s, i, "}")
    return out, i


def _array(s, i):
    out = []
    i = _skip(s, i)
    more = i >= len(s) or s[i] != "]"
    i = i if more else i + 1
    while more:
        v, i = _value(s, i)
        out.append(v)
        more, i = _after_item(s, i, "]")
    return out, i


def _after_item(s, i, close):
    """After a member: (True, next offset) at a ',', (False, offset after it) at the close."""
    i = _skip(s, i)
    if i < len(s) and s[i] == ",":
        return True, _skip(s, i + 1)
    if i < len(s) and s[i] == close:
        return False, i + 1
    raise ValueError("json: ',' or '%s' expected at offset %d" % (close, i))


def _string(s, i):
    parts = []
    start = i
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            parts.append(s[start:i])
            return "".join(parts), i + 1
        if c == "\\":
            parts.append(s[start:i])
            e = s[i + 1:i + 2]
            if e == "u":
                parts.append(chr(int(s[i + 2:i + 6], 16)))
                i += 6
            elif e in _ESC:
                parts.append(_ESC[e])
                i += 2
            else:
                raise ValueError("json: bad escape at offset %d" % i)
            start = i
        else:
            i += 1
    raise ValueError("json: unterminated string at offset %d" % start)


def _number(s, i):
    j = i
    n = len(s)
    while j < n and s[j] in _NUM:
        j += 1
    t = s[i:j]
    if not t:
        raise ValueError("json: unexpected character at offset %d" % i)
    try:
        if "." in t or "e" in t or "E" in t:
            return float(t), j
        return int(t), j
    except ValueError:
        raise ValueError("json: bad number at offset %d" % i)
