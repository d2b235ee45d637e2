"""Generated and mutated .npy files, and numpy.load's verdict on each: the oracle of test_npy_grammar.py.

`generated(rng)` builds a header from parts chosen at random (key spellings, string prefixes and escapes, numbers in
every base, nested literals in values a repeated key overrides, comments, line continuations, indentation, padding,
Python 2 longs, versions, encodings) so that about half the files are accepted; `mutated(rng, data)` then inserts,
deletes or replaces a few characters. `numpy_verdict(data)` is what numpy.load makes of a file, read as the loader
reads an input: a float32 array whose header spells 'descr' as '<f4'.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from unittest import mock

import numpy as np
import numpy.lib._format_impl as npy_format

MAGIC = b"\x93NUMPY"
DATA_CAP = 1 << 16  # bytes of data written at most; larger arrays get none (numpy and the loader refuse them)


@dataclass(frozen=True)
class Verdict:
    """numpy's (or the loader's) reading of a file: None if refused, else (fortran_order, shape)."""

    array: tuple[bool, tuple[int, ...]] | None

    @property
    def accepted(self) -> bool:
        return self.array is not None


def preamble(version: tuple[int, int], header: bytes, length: int | None = None) -> bytes:
    n = len(header) if length is None else length
    size = struct.pack("<H", n & 0xFFFF) if version[0] == 1 else struct.pack("<I", n & 0xFFFFFFFF)
    return MAGIC + bytes(version) + size


def numpy_shape(data: bytes) -> tuple[int, ...] | None:
    """The shape numpy reads from a file's header, if it reads one, so that the test can append as much data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = io.BytesIO(data)
            version = npy_format.read_magic(f)
            npy_format._check_version(version)
            with mock.patch.object(npy_format, "descr_to_dtype", lambda descr: np.dtype("<f4")):
                shape, _, _ = npy_format._read_array_header(f, version)
    except Exception:
        return None
    return shape


def with_data(header_file: bytes) -> bytes:
    """The file with exactly the data its shape needs as float32, when numpy reads a shape of few enough bytes."""
    shape = numpy_shape(header_file)
    if shape is None or not all(type(d) is int and d >= 0 for d in shape):
        return header_file
    count = int(np.prod(shape, dtype=object)) if shape else 1
    return header_file + bytes(4 * count) if 4 * count <= DATA_CAP else header_file


def numpy_verdict(data: bytes) -> Verdict:
    """numpy.load's verdict, counting only arrays whose header's 'descr' is the string '<f4' (what the loader reads;
    numpy also reads other spellings of float32)."""
    seen = []
    original = npy_format.descr_to_dtype

    def spy(descr: object) -> np.dtype:
        seen.append(descr)
        return original(descr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mock.patch.object(npy_format, "descr_to_dtype", spy):
                array = np.load(io.BytesIO(data), allow_pickle=False)
    except BaseException as error:  # numpy raises many kinds: ValueError, TypeError, MemoryError, OverflowError...
        if isinstance(error, KeyboardInterrupt):
            raise
        return Verdict(None)
    if not isinstance(array, np.ndarray) or seen[:1] != ["<f4"]:  # the header's own descr, not a field's
        return Verdict(None)
    return Verdict((bool(array.flags.f_contiguous and not array.flags.c_contiguous) or fortran_of(data), array.shape))


def fortran_of(data: bytes) -> bool:
    """fortran_order as numpy read it (an array of one element is both C- and Fortran-contiguous)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = io.BytesIO(data)
        version = npy_format.read_magic(f)
        return bool(npy_format._read_array_header(f, version)[1])


# ---- generated headers ----

QUOTES = ("'", '"', "'''", '"""')
TEXT_PREFIXES = ("", "", "", "u", "r", "U", "R")
BAD_PREFIXES = ("b", "f", "rb", "ur", "bu", "F")
BLANKS = (" ", " ", "", "  ", "\t", "\f")
# between tokens inside the dict (brackets open: newlines and comments are fine)
INNER = (*BLANKS, "\n", "\r\n", "\r", " # note\n", "\\\n", "\n\n  ", " #\r", "\n\t")
INVALID_INNER = ("\v", "\x00", "\xa0", ";")
LEADING = (
    "",
    "",
    "",
    " ",
    "\t",
    "\n",
    "\f",
    "\f ",
    "# c\n",
    "\\\n",
    "\n ",
    " \n",
    "\ufeff",
    "\r",
    "\n\t",
    "x",
    "\\\n ",
    "\f\\\n",
    " \\\n\n",
    "\n \\\n",
)
TRAILING = (
    "",
    "",
    "\n",
    " \n",
    "   \n",
    "\n ",
    "\n\t",
    "\n# c",
    "\n#",
    " # c",
    "\n\\\n",
    "\\\n ",
    "\n\n",
    ";",
    " x",
    ",",
    ")",
    "\x00",
    "\f",
    "\n\f",
    "\n\f ",
    "\r",
    "\r\n ",
    "\n \n",
    "\n  \n  ",
    "}",
    " \\",
    "\n\\\n ",
    "\n\\\n\n",
    "\n \\\n\n",
    "\n\\\n\\\n ",
)


def string_literal(rng: np.random.Generator, value: str, allow_bad: bool = True) -> str:
    """A Python string literal whose value is `value`, in one of many spellings (and sometimes a wrong one)."""
    roll = rng.random()
    if allow_bad and roll < 0.01:
        return str(rng.choice(BAD_PREFIXES)) + repr(value)
    if roll < 0.12 and len(value) > 1:  # implicit concatenation
        cut = int(rng.integers(1, len(value)))
        return string_literal(rng, value[:cut], allow_bad) + str(rng.choice(BLANKS)) + string_literal(rng, value[cut:])
    if roll < 0.22 and value:  # one character escaped
        k = int(rng.integers(len(value)))
        c = value[k]
        escape = str(rng.choice([f"\\x{ord(c):02x}", f"\\{ord(c):o}", f"\\u{ord(c):04x}", f"\\U{ord(c):08x}"]))
        quote = str(rng.choice(QUOTES))
        return quote + value[:k] + escape + value[k + 1 :] + quote
    quote = str(rng.choice(QUOTES))
    return str(rng.choice(TEXT_PREFIXES)) + quote + value + quote


def integer_literal(rng: np.random.Generator, value: int, python2: bool) -> str:
    roll = rng.random()
    sign = "-" if value < 0 else ""
    v = abs(value)
    if roll < 0.08:
        text = f"{sign}0x{v:x}"
    elif roll < 0.12:
        text = f"{sign}0o{v:o}"
    elif roll < 0.15:
        text = f"{sign}0b{v:b}"
    elif roll < 0.2 and v >= 10:
        s = str(v)
        text = sign + s[0] + "_" + s[1:]
    elif roll < 0.24:
        text = ("+" if not sign else "-") + str(rng.choice(["", " ", "(", "\t"])) + str(v)
        if "(" in text:
            text += ")"
    elif roll < 0.27:
        text = f"({sign}{v})"
    else:
        text = f"{sign}{v}"
    if python2 and rng.random() < 0.3:
        text += str(rng.choice(["L", " L", "L", "l", "LL", "\\\nL"]))
    return text


def shape_literal(rng: np.random.Generator, python2: bool, model_shapes: tuple[tuple[int, ...], ...] = ()) -> str:
    """A shape, mostly a tuple of small dimensions, one of `model_shapes` half the time if any are given."""
    roll = rng.random()
    specials = [
        "[2, 3]",
        "2",
        "(2)",
        "(True, 3)",
        "(2.0,)",
        "(2j,)",
        "(1+2j,)",
        "(,)",
        "(2,,)",
        "(-1,)",
        "(9223372036854775807,)",
        "(9223372036854775808,)",
        "(0, 4611686018427387904)",
        "(0, 2305843009213693951)",
        "(18446744073709551616,)",
        "(10**3,)",
        "((2, 3),)",
        "(((2), 3))",
        "((2, 3))",
        "(- -2,)",
        "(-(2),)",
        "(2,) + (3,)",
        "(set(),)",
        "()",
        "(0,)",
        "(0, 7)",
        "(" + "1, " * 64 + ")",
        "(" + "1, " * 65 + ")",
        "(2, None)",
        "(2, '3')",
    ]
    if roll < 0.15:
        return str(rng.choice(specials))
    if model_shapes and rng.random() < 0.5:
        dims = list(model_shapes[int(rng.integers(len(model_shapes)))])
    else:
        ndim = int(rng.choice([0, 1, 1, 2, 2, 3]))
        dims = [int(rng.choice([0, 1, 2, 3, 5])) for _ in range(ndim)]
    ndim = len(dims)
    parts = [integer_literal(rng, d, python2) for d in dims]
    sep = [str(rng.choice(INNER[:8])) for _ in parts]
    body = "".join(p + "," + s for p, s in zip(parts, sep, strict=True))
    if ndim > 1 and rng.random() < 0.5:
        body = body.rstrip().rstrip(",")  # no trailing comma, allowed from 2 elements
    return "(" + body + ")"


def nested_literal(rng: np.random.Generator, depth: int = 0) -> str:
    """Any literal, for values a later repeated key overrides (they must still be valid, hashable where needed)."""
    atoms = [
        "1",
        "-2",
        "3.5",
        "1e3",
        "2j",
        "1+2j",
        "-1-0.5j",
        "None",
        "True",
        "...",
        "'s'",
        "b'b'",
        "r'\\d'",
        "0x1F",
        "1_000",
        "set()",
        "(set)()",
        "'\\x4'",
        "2j+1",
        "-True",
        "x",
        "1 .real",
        "f'x'",
        "(1)(2)",
        "'a' b'b'",
        "0777",
        "00",
        "1__0",
        "--1",
    ]
    if depth > 2 or rng.random() < 0.4:
        return str(rng.choice(atoms))
    kind = rng.choice(["list", "tuple", "dict", "set", "paren"])
    items = [nested_literal(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    if kind == "list":
        return "[" + ", ".join(items) + "]"
    if kind == "tuple":
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if kind == "set" and items:
        return "{" + ", ".join(items) + "}"
    if kind == "paren" and items:
        return "(" + items[0] + ")"
    return "{" + ", ".join(f"{k}: {v}" for k, v in zip(items, reversed(items), strict=True)) + "}"


def generated(rng: np.random.Generator, model_shapes: tuple[tuple[int, ...], ...] = ()) -> bytes:
    """A whole .npy file (header and, when numpy reads a shape, its data); `model_shapes` biases the shapes."""
    version = [(1, 0), (2, 0), (3, 0)][int(rng.choice([0, 0, 0, 1, 2]))]
    if rng.random() < 0.03:
        version = [(1, 9), (0, 0), (4, 0), (2, 1), (3, 3), (255, 0)][int(rng.integers(6))]
    python2 = version[0] in (1, 2) and rng.random() < 0.3
    descr_value = "<f4" if rng.random() < 0.85 else str(rng.choice(["f4", "<f8", ">f4", "|u1", "float32", "<f4 ", ""]))
    values = {
        "descr": string_literal(rng, descr_value),
        "fortran_order": str(rng.choice(["False"] * 24 + ["True"] * 4 + ["(False)", "0", "'False'", "None", "false"])),
        "shape": shape_literal(rng, python2, model_shapes),
    }
    if rng.random() < 0.05:
        values["descr"] = str(rng.choice(["[('a', '<f4')]", "b'<f4'", "1", "None", "('<f4', (2,))"]))
    keys = list(values)
    rng.shuffle(keys)
    entries = [(string_literal(rng, k), values[k]) for k in keys]
    if rng.random() < 0.2:  # a repeated key whose first value the second overrides
        k = int(rng.integers(len(entries)))
        entries.insert(k, (entries[k][0], nested_literal(rng)))
    if rng.random() < 0.04:
        entries.pop(int(rng.integers(len(entries))))
    if rng.random() < 0.04:
        entries.append((string_literal(rng, str(rng.choice(["extra", "Descr", "shape "]))), "1"))
    if rng.random() < 0.02:
        entries.insert(0, (str(rng.choice(["1", "(1,)", "None", "[1]"])), "1"))

    def gap() -> str:
        roll = rng.random()
        return str(rng.choice(INVALID_INNER if roll < 0.003 else INNER if roll < 0.2 else BLANKS))

    body = "{" + gap()
    for k, (key, value) in enumerate(entries):
        body += key + gap() + ":" + gap() + value + gap()
        if k < len(entries) - 1 or rng.random() < 0.7:
            body += "," + gap()
    body += "}"
    if rng.random() < 0.04:
        body = "(" + gap() + body + gap() + str(rng.choice([")", ",)", ", 1)"]))
    text = str(rng.choice(LEADING)) if rng.random() < 0.15 else ""
    text += body
    if rng.random() < 0.6:  # numpy.save's padding
        pad = (64 - (len(text) + 11) % 64) % 64
        text += " " * pad + "\n"
    if rng.random() < 0.2:
        text += str(rng.choice(TRAILING))
    if version[0] == 3 and rng.random() < 0.2:
        text = text.replace("}", "} # é\n", 1) if rng.random() < 0.5 else text.replace("'", "'\u00e9", 1)
    header = encode(text, version, rng)
    length = None
    if rng.random() < 0.03:
        length = len(header) + int(rng.choice([-1, 1, 1000, 1 << 20]))
    if rng.random() < 0.02:
        header = header + b" " * (10001 - len(header)) + b"\n"
    file = preamble(version, header, length) + header
    data = with_data(file)
    if rng.random() < 0.05 and len(data) > len(file):
        data = data[: -int(rng.integers(1, 4))]
    elif rng.random() < 0.05:
        data += b"\0" * int(rng.integers(1, 9))
    return data


def encode(text: str, version: tuple[int, int], rng: np.random.Generator) -> bytes:
    if version[0] == 3:
        data = text.encode("utf-8")
        if rng.random() < 0.03:
            data = data.replace(b"{", b"{\xc3", 1)  # a truncated UTF-8 sequence
        return data
    return text.encode("latin-1", errors="replace")


# ---- mutations ----

ALPHABET = [*"'\"(){}[],:+-._#\\ \t\n\r\fLlxobjeE0123456789TrueFalsNn<f4", "\x00", "\x0b", "\xe9", "\x93"]


def mutated(rng: np.random.Generator, data: bytes) -> bytes:
    """`data` with a few characters of its header inserted, deleted or replaced (the preamble's length kept right
    unless the mutation hits it), and its data sized again."""
    if len(data) < 10 or data[:6] != MAGIC:
        return data
    major = data[6]
    offset = 10 if major == 1 else 12
    if len(data) < offset:
        return data
    length = int.from_bytes(data[8:offset], "little")
    header = bytearray(data[offset : offset + length])
    for _ in range(int(rng.integers(1, 4))):
        pos = int(rng.integers(0, len(header) + 1))
        ch = str(rng.choice(ALPHABET)).encode("utf-8" if major == 3 else "latin-1")
        op = rng.integers(3)
        if op == 0:
            header[pos:pos] = ch
        elif op == 1 and header:
            del header[min(pos, len(header) - 1)]
        elif header:
            header[min(pos, len(header) - 1) : min(pos, len(header) - 1) + 1] = ch
    version = [(1, 0), (2, 0), (3, 0)][int(rng.integers(3))] if rng.random() < 0.05 else (major, data[7])
    file = preamble(version, bytes(header)) + bytes(header)
    return with_data(file)
