#!/usr/bin/env python3
"""Align an APK's stored entries as Android wants them: native libraries (``*.so``) at 16 KB, other stored
entries at 4 bytes; compressed entries as they are. Debian's zipalign (build-tools 10) page-aligns libraries to
4 KB only (its ``-p``); phones with 16 KB pages need 16 KB.

    align-apk.py IN.apk OUT.apk

Each aligned entry's local header gets the extra field zipalign writes (ID 0xD935: the alignment, then zero
padding), which apksigner reads back to keep that alignment when it signs. Entries keep their order, bytes and
central-directory fields; only local extra fields and offsets change. Python standard library only.
"""
from __future__ import annotations

import struct
import sys
import zipfile
from pathlib import Path

LIBRARY_ALIGNMENT = 16384
STORED_ALIGNMENT = 4
ALIGNMENT_FIELD = 0xD935
LFH = struct.Struct("<IHHHHHIIIHH")  # local file header, 30 bytes
LFH_SIGNATURE = 0x04034B50


def strip_alignment_fields(extra: bytes) -> bytes:
    """The extra field without earlier alignment fields (0xD935) and without zero padding a tool left after it."""
    out, i = b"", 0
    while i + 4 <= len(extra):
        field_id, size = struct.unpack_from("<HH", extra, i)
        if field_id == 0 and size == 0:
            break  # zero padding from an older aligner: the rest is padding
        if field_id != ALIGNMENT_FIELD:
            out += extra[i:i + 4 + size]
        i += 4 + size
    return out


def alignment_of(info: zipfile.ZipInfo) -> int:
    if info.compress_type != zipfile.ZIP_STORED:
        return 1
    return LIBRARY_ALIGNMENT if info.filename.endswith(".so") else STORED_ALIGNMENT


def align(src: Path, dst: Path) -> list[tuple[str, int, int]]:
    """Write ``src`` aligned to ``dst``; returns (name, data offset, alignment) of each aligned entry."""
    data = src.read_bytes()
    with zipfile.ZipFile(src) as z:
        infos = z.infolist()
    out = bytearray()
    central = bytearray()
    aligned = []
    for info in infos:
        start = info.header_offset
        fields = LFH.unpack_from(data, start)
        if fields[0] != LFH_SIGNATURE:
            raise SystemExit(f"error: {src}: bad local header for {info.filename}")
        name_len, extra_len = fields[9], fields[10]
        name = data[start + 30:start + 30 + name_len]
        extra = strip_alignment_fields(data[start + 30 + name_len:start + 30 + name_len + extra_len])
        body_start = start + 30 + name_len + extra_len
        body_len = info.compress_size + (16 if info.flag_bits & 0x08 else 0)  # data, then its descriptor if any
        if info.flag_bits & 0x08 and data[body_start + info.compress_size:body_start + info.compress_size + 4] != b"PK\x07\x08":
            body_len -= 4  # a data descriptor without its optional signature
        multiple = alignment_of(info)
        offset = len(out)
        if multiple > 1:
            before = offset + 30 + name_len + len(extra) + 6  # + the alignment field's header and its alignment value
            padding = (-before) % multiple
            extra += struct.pack("<HHH", ALIGNMENT_FIELD, 2 + padding, multiple) + b"\0" * padding
            aligned.append((info.filename, offset + 30 + name_len + len(extra), multiple))
        header = LFH.pack(*fields[:10], len(extra))
        out += header + name + extra + data[body_start:body_start + body_len]
        central += central_record(info, offset)
    cd_offset = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(infos), len(infos), len(central), cd_offset, 0)
    tmp = dst.with_name(dst.name + ".partial")
    tmp.write_bytes(out)
    tmp.replace(dst)
    return aligned


def central_record(info: zipfile.ZipInfo, offset: int) -> bytes:
    """The central directory record of ``info`` at local-header ``offset`` (its fields as read)."""
    name = info.filename.encode("utf-8") if info.flag_bits & 0x800 else info.orig_filename.encode("cp437", "replace")
    dt = info.date_time
    dos_time = (dt[3] << 11) | (dt[4] << 5) | (dt[5] // 2)
    dos_date = ((dt[0] - 1980) << 9) | (dt[1] << 5) | dt[2]
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, info.create_version | (info.create_system << 8),
                       info.extract_version, info.flag_bits, info.compress_type, dos_time, dos_date, info.CRC,
                       info.compress_size, info.file_size, len(name), len(info.extra), len(info.comment), 0,
                       info.internal_attr, info.external_attr, offset) + name + info.extra + info.comment


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("error: usage: align-apk.py IN.apk OUT.apk", file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    try:
        aligned = align(src, dst)
    except (OSError, zipfile.BadZipFile) as e:
        print(f"error: cannot align {src}: {e}", file=sys.stderr)
        return 2
    libs = sum(1 for _, _, m in aligned if m == LIBRARY_ALIGNMENT)
    print(f"[align-apk] {len(aligned)} stored entries aligned ({libs} native libraries at {LIBRARY_ALIGNMENT} bytes)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
