"""The exit-rule block of a built executable and of the model's libraries: read it, and rewrite it in place.

The loader defines one `masic_exit_override_t` (runtime/masic_model.h), alone in the ELF section `.masic_exit`:
magic, version, a `set` flag and a `masic_exit_rule_t`. Rewriting that block is how `masic calibrate` changes the
rule an executable applies without recompiling kernels or relinking (no toolchain needed), so the executable alone,
copied to a device, carries it. The section is found through the ELF section headers, and its size, magic and
version are checked before a byte is written. The static library holds the block in its member exit_rule.o (an ELF
object inside an `ar` archive), the shared library as the executable does, so that a program embedding the model
applies the calibrated rule too.
"""

from __future__ import annotations

import struct
from pathlib import Path

from masic.early_exit import RULES, ExitRule
from masic.errors import MasicError

SECTION = ".masic_exit"
MAGIC = b"masic-exit-rule\0"
VERSION = 1
# magic[16], version, set, then masic_exit_rule_t {int32 rule, int32 min_timesteps, double threshold}
BLOCK = struct.Struct("<16sIIiid")
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_SHT_PROGBITS = 1


class ExitSectionError(MasicError, ValueError):
    """The executable has no usable exit-rule section."""


def block_offset(data: bytes, path: Path) -> int:
    """File offset of the exit-rule block in an executable's bytes, after checking the section's size, magic and
    version; `path` only names the file in errors."""
    if len(data) < _ELF_HEADER.size or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ExitSectionError(f"{path} is not a 64-bit little-endian ELF executable")
    header = _ELF_HEADER.unpack_from(data)
    shoff, shentsize, shnum, shstrndx = header[6], header[11], header[12], header[13]
    if shentsize != _SECTION_HEADER.size or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        raise ExitSectionError(f"{path} has damaged ELF section headers; re-copy the artifact folder")
    sections = [_SECTION_HEADER.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = sections[shstrndx][4]
    for name, kind, _flags, _addr, offset, size, *_ in sections:
        end = data.find(b"\0", names_offset + name)
        if data[names_offset + name : end].decode("ascii", "replace") != SECTION:
            continue
        if kind != _SHT_PROGBITS or size != BLOCK.size or offset + size > len(data):
            raise ExitSectionError(f"{path}: section {SECTION} is {size} bytes, expected {BLOCK.size}")
        magic, version = BLOCK.unpack_from(data, offset)[:2]
        if magic != MAGIC or version != VERSION:
            raise ExitSectionError(f"{path}: section {SECTION} has an unknown format; recompile the model")
        return offset
    raise ExitSectionError(f"{path} has no {SECTION} section: it was built by an older masic; recompile the model")


def read_exit_rule(executable: Path) -> ExitRule | None:
    """The rule written into the executable, or None if it applies its compiled-in rule."""
    data = executable.read_bytes()
    _, _, is_set, rule, min_timesteps, threshold = BLOCK.unpack_from(data, block_offset(data, executable))
    if is_set not in (0, 1):  # as the loader: any other value is damage
        raise ExitSectionError(f"{executable}: section {SECTION} is damaged (flag {is_set}); recompile the model")
    if not is_set:
        return None
    if not 0 <= rule < len(RULES):
        raise ExitSectionError(f"{executable}: section {SECTION} names unknown exit rule {rule}")
    return ExitRule(RULES[rule], threshold, min_timesteps)


def write_exit_rule(executable: Path, rule: ExitRule) -> None:
    """Rewrites the executable's (or shared library's) exit-rule block in place so that it applies `rule` when no
    flag overrides it."""
    data = bytearray(executable.read_bytes())
    _pack(data, block_offset(bytes(data), executable), rule)
    executable.write_bytes(bytes(data))


def _pack(data: bytearray, offset: int, rule: ExitRule) -> None:
    BLOCK.pack_into(data, offset, MAGIC, VERSION, 1, RULES.index(rule.rule), rule.min_timesteps, rule.threshold)


AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60  # name[16] mtime[12] uid[6] gid[6] mode[8] size[10] "`\n"
EXIT_MEMBER = b"exit_rule.o/"  # the object defining the block, as GNU ar names it


def archive_block_offset(data: bytes, path: Path) -> int:
    """File offset of the exit-rule block in a static library: in its member exit_rule.o."""
    if not data.startswith(AR_MAGIC):
        raise ExitSectionError(f"{path} is not an ar archive")
    offset = len(AR_MAGIC)
    while offset + _AR_HEADER <= len(data):
        header = data[offset : offset + _AR_HEADER]
        field = header[48:58].strip()
        size = int(field) if field.isdigit() else -1
        start = offset + _AR_HEADER
        if header[58:60] != b"`\n" or size < 0 or start + size > len(data):
            raise ExitSectionError(f"{path} is a damaged ar archive; recompile the model")
        if header[:16].rstrip() == EXIT_MEMBER:
            return start + block_offset(data[start : start + size], path)
        offset = start + size + (size & 1)
    raise ExitSectionError(f"{path} has no member {EXIT_MEMBER.decode()[:-1]}: recompile the model")


def write_archive_exit_rule(archive: Path, rule: ExitRule) -> None:
    """Rewrites the exit-rule block of a static library in place (see write_exit_rule)."""
    data = bytearray(archive.read_bytes())
    _pack(data, archive_block_offset(bytes(data), archive), rule)
    archive.write_bytes(bytes(data))
