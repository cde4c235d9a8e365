"""Plain values across the boundary between a candidate's process and the tests' process.

encode() accepts the builtins int, float, complex, str, bytes, bool, None, list, tuple, dict, set and frozenset,
recursively. A subclass of one of them travels as that builtin (a namedtuple as a tuple, an IntEnum as an int,
a defaultdict, Counter or OrderedDict as a dict; a bytearray as bytes) unless it redefines comparison or
hashing: that, or an object of any other class, raises NotPlain. decode() builds fresh builtins from the text
alone, so whatever the other side sends, the tests compare plain values. Messages are length-prefixed JSON
on pipes.

This module imports only the standard library and runs inside the sandbox as well: code.py embeds its
source in both programs, so keep it self-contained."""
import collections
import json
import os

MAX_MESSAGE = 8 << 20       # bytes: a larger message ends the exchange (output flooding)
MAX_DEPTH = 100


_PLAIN = (bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)
_COMPARISON = ("__eq__", "__ne__", "__hash__", "__lt__", "__le__", "__gt__", "__ge__")
_DICTS = (collections.Counter, collections.OrderedDict)    # redefine ==, but compare with a dict as a dict does


class NotPlain(TypeError):
    """A value that is not plain data."""


def plain_base(kind):
    """The builtin that values of `kind` travel as, or None (not a builtin's subclass, or one that redefines
    comparison or hashing)."""
    mro = kind.__mro__
    base = next((c for c in mro if c in _PLAIN), None)
    if base is None:
        return None
    for cls in mro[:mro.index(base)]:
        if cls not in _DICTS and any(name in cls.__dict__ for name in _COMPARISON):
            return None
    return base


def encode(value, depth=0):
    """value -> a JSON-able tree of tagged nodes; raises NotPlain. A subclass is read through its builtin's own
    methods, never its overrides."""
    if depth > MAX_DEPTH:
        raise NotPlain(f"nested deeper than {MAX_DEPTH}")
    if value is None:
        return ["n"]
    kind = type(value)
    if kind is bytearray:
        return ["b", bytes(value).hex()]
    base = kind if kind in _PLAIN else plain_base(kind)
    if base is None:
        subclass = any(c in _PLAIN for c in kind.__mro__)     # of a builtin, then one that redefines comparison
        raise NotPlain(f"a {kind.__module__}.{kind.__qualname__}, not plain data"
                       + (" (it redefines comparison)" if subclass else ""))
    if base is bool:
        return ["t", value is True]
    if base is int:
        return ["i", format(int.__index__(value), "x")]          # hex: no digit limit, exact
    if base is float:
        return ["f", float.__float__(value).hex()]
    if base is complex:
        return ["c", complex.real.__get__(value).hex(), complex.imag.__get__(value).hex()]
    if base is str:
        return ["s", str.__str__(value)]
    if base is bytes:
        return ["b", bytes.__getitem__(value, slice(None)).hex()]
    if base is dict:
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
    tag = {list: "l", tuple: "u", set: "e", frozenset: "z"}[base]
    return [tag, [encode(v, depth + 1) for v in base.__iter__(value)]]


def decode(node, depth=0):
    """The inverse of encode(), from the JSON tree alone; raises ValueError on anything else."""
    if depth > MAX_DEPTH or type(node) is not list or not node or type(node[0]) is not str:
        raise ValueError("malformed plain-data node")
    tag, rest = node[0], node[1:]
    if tag == "n" and not rest:
        return None
    if tag == "t" and len(rest) == 1 and type(rest[0]) is bool:
        return rest[0]
    if tag in ("i", "f", "s", "b") and len(rest) == 1 and type(rest[0]) is str:
        text = rest[0]
        return int(text, 16) if tag == "i" else float.fromhex(text) if tag == "f" else \
            text if tag == "s" else bytes.fromhex(text)
    if tag == "c" and len(rest) == 2 and all(type(x) is str for x in rest):
        return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
    if tag in ("l", "u", "e", "z") and len(rest) == 1 and type(rest[0]) is list:
        items = [decode(v, depth + 1) for v in rest[0]]
        return items if tag == "l" else tuple(items) if tag == "u" else set(items) if tag == "e" else frozenset(items)
    if tag == "d" and len(rest) == 1 and type(rest[0]) is list:
        pairs = rest[0]
        if not all(type(p) is list and len(p) == 2 for p in pairs):
            raise ValueError("malformed plain-data dict")
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in pairs}
    raise ValueError(f"unknown plain-data node {tag!r}")


def send(fd, message):
    """Writes one JSON message (a dict of plain JSON) to a pipe."""
    data = json.dumps(message).encode()
    payload = len(data).to_bytes(8, "big") + data
    while payload:
        payload = payload[os.write(fd, payload):]


def receive(fd):
    """Reads one message; EOFError when the other side has ended, ValueError when it breaks the format."""
    size = int.from_bytes(_read_exactly(fd, 8), "big")
    if size > MAX_MESSAGE:
        raise ValueError(f"a message of {size} bytes (at most {MAX_MESSAGE})")
    message = json.loads(_read_exactly(fd, size))
    if type(message) is not dict:
        raise ValueError("a message that is not an object")
    return message


def _read_exactly(fd, size):
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other side ended")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
