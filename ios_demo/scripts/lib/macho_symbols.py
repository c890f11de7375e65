"""The symbol half of check-executorch.sh: what a Mach-O library exports, and whether it exports every ExecuTorch
symbol an object file needs.

    python macho_symbols.py exports LIBRARY OUT.txt
        OUT.txt: the external symbols LIBRARY defines (a thin or fat Mach-O; every architecture), one a line, without
        Mach-O's leading "_" (so `c++filt` demangles them as it demangles ELF names).
    python macho_symbols.py check NEEDED.txt NAME=EXPORTS.txt [NAME=EXPORTS.txt ...]
        NEEDED.txt: the object's undefined symbols, demangled (`nm -u -C`); EXPORTS.txt: a library's exports,
        demangled. Every needed symbol of ExecuTorch's (the executorch, torch and c10 namespaces, the et_pal_
        functions) must be exported by each library. Prints the counts; exits 1 naming what is missing.

The object is compiled on x86-64 Linux against libc++ (iOS's C++ library, so std:: types are std::__1 on both
sides). Two platform facts differ and are normalised before comparing: 64-bit integers are `long` on Linux and
`long long` on Apple platforms, and va_list is `__va_list_tag*` on x86-64 Linux and `char*` on Apple's arm64.
"""
from __future__ import annotations

import re
import struct
import sys
from pathlib import Path

FAT_MAGIC, FAT_MAGIC_64 = 0xCAFEBABE, 0xCAFEBABF
MH_MAGIC_64 = 0xFEEDFACF
LC_SYMTAB = 0x2
N_STAB, N_PEXT, N_TYPE, N_EXT, N_SECT = 0xE0, 0x10, 0x0E, 0x01, 0x0E


def slices(data: bytes) -> list[bytes]:
    """The thin Mach-O images in `data` (a fat file holds one per architecture)."""
    magic = struct.unpack_from(">I", data)[0]
    if magic not in (FAT_MAGIC, FAT_MAGIC_64):
        return [data]
    out = []
    for i in range(struct.unpack_from(">I", data, 4)[0]):
        if magic == FAT_MAGIC:
            _, _, offset, size, _ = struct.unpack_from(">iiIII", data, 8 + 20 * i)
        else:
            _, _, offset, size, _, _ = struct.unpack_from(">iiQQII", data, 8 + 32 * i)
        out.append(data[offset:offset + size])
    return out


def exported(image: bytes) -> set[str]:
    """External symbols defined in a thin 64-bit Mach-O (LC_SYMTAB entries: N_EXT, in a section, not private)."""
    magic, _, _, _, ncmds = struct.unpack_from("<IiiII", image)
    if magic != MH_MAGIC_64:
        raise SystemExit(f"error: not a 64-bit little-endian Mach-O image (magic {magic:#x})")
    offset, names = 32, set()
    for _ in range(ncmds):
        cmd, size = struct.unpack_from("<II", image, offset)
        if cmd == LC_SYMTAB:
            symoff, nsyms, stroff, _ = struct.unpack_from("<IIII", image, offset + 8)
            for k in range(nsyms):
                strx, ntype = struct.unpack_from("<IB", image, symoff + 16 * k)
                if ntype & N_STAB or ntype & N_PEXT or not ntype & N_EXT or ntype & N_TYPE != N_SECT:
                    continue
                end = image.index(b"\0", stroff + strx)
                names.add(image[stroff + strx:end].decode("ascii", "replace"))
        offset += size
    return names


def normalised(symbol: str) -> str:
    symbol = re.sub(r"\s+", " ", symbol.strip())
    symbol = symbol.replace("__va_list_tag*", "char*")
    return symbol.replace("unsigned long long", "unsigned long").replace("long long", "long")


def owned(symbol: str) -> bool:
    return symbol.startswith("et_pal_") or any(ns in symbol for ns in ("executorch::", "torch::", "c10::"))


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "exports":
        images = slices(Path(argv[2]).read_bytes())
        names = set.intersection(*(exported(image) for image in images))  # exported by every architecture
        Path(argv[3]).write_text("".join(n[1:] + "\n" if n.startswith("_") else n + "\n" for n in sorted(names)))
        return 0
    if len(argv) >= 4 and argv[1] == "check":
        needed = sorted({normalised(s) for s in Path(argv[2]).read_text().splitlines() if owned(s.strip())})
        status = 0
        for spec in argv[3:]:
            name, _, path = spec.partition("=")
            exports = {normalised(s) for s in Path(path).read_text().splitlines()}
            missing = [s for s in needed if s not in exports]
            print(f"{name}: the shim needs {len(needed)} ExecuTorch symbols; {len(needed) - len(missing)} exported, "
                  f"{len(missing)} missing (of {len(exports)} exports)")
            for s in missing:
                print(f"  missing: {s}")
            status |= bool(missing)
        return status
    raise SystemExit("usage: macho_symbols.py exports LIBRARY OUT.txt | check NEEDED.txt NAME=EXPORTS.txt ...")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
