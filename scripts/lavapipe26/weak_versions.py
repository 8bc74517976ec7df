#!/usr/bin/env python3
"""Marks a shared library's needs for glibc versions newer than the host's as weak, in place,
after checking that every symbol it takes from those versions is one that a shim supplies.

    weak_versions.py LIB HOST_GLIBC SYMBOL...     e.g. weak_versions.py libvulkan_lvp.so 2.36 __isoc23_strtol ...

The dynamic loader refuses a library that needs a version its libc lacks (GLIBC_2.38 on a
2.36 host), even when another loaded object defines the symbols. With the need marked weak
(VER_FLG_WEAK in its Vernaux entry, two bytes of .gnu.version_r), the loader accepts the
library and binds those symbols to the unversioned definitions of the preloaded shim. Any
symbol of a newer version that the shim lacks is an error naming it: nothing is left unbound.
Prints the versions it marked; marking twice changes nothing."""
import struct
import sys

SHT_DYNSYM, SHT_GNU_VERNEED, SHT_GNU_VERSYM = 11, 0x6FFFFFFE, 0x6FFFFFFF
VER_FLG_WEAK = 0x2


def sections(elf):
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        sys.exit("weak_versions: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    out = []
    for i in range(shnum):
        name, kind, _flags, _addr, off, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", elf, shoff + i * shentsize)
        out.append(dict(kind=kind, off=off, size=size, link=link, entsize=entsize))
    return out


def cstr(elf, off):
    return elf[off:elf.index(b"\0", off)].decode()


def newer(version, host):
    if not version.startswith("GLIBC_"):
        return False
    try:
        return tuple(map(int, version[6:].split("."))) > host
    except ValueError:
        return False


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path, host = sys.argv[1], tuple(map(int, sys.argv[2].split(".")))
    shimmed = set(sys.argv[3:])
    elf = bytearray(open(path, "rb").read())
    secs = sections(elf)
    need = next((s for s in secs if s["kind"] == SHT_GNU_VERNEED), None)
    if need is None:
        print("weak_versions: no version needs")
        return
    strtab = secs[need["link"]]["off"]
    marked = {}  # version index -> (name, offset of vna_flags)
    at = need["off"]
    while True:
        _ver, cnt, vfile, aux, nxt = struct.unpack_from("<HHIII", elf, at)
        a = at + aux
        for _ in range(cnt):
            _hash, flags, other, name, anext = struct.unpack_from("<IHHII", elf, a)
            if cstr(elf, strtab + vfile) == "libc.so.6" and newer(cstr(elf, strtab + name), host):
                marked[other & 0x7FFF] = (cstr(elf, strtab + name), a + 4, flags)
            a += anext
        if nxt == 0:
            break
        at += nxt
    dynsym = next(s for s in secs if s["kind"] == SHT_DYNSYM)
    versym = next(s for s in secs if s["kind"] == SHT_GNU_VERSYM)
    dynstr = secs[dynsym["link"]]["off"]
    lacking = []
    for i in range(dynsym["size"] // dynsym["entsize"]):
        name, _info, _other, shndx = struct.unpack_from("<IBBH", elf, dynsym["off"] + i * dynsym["entsize"])
        ver, = struct.unpack_from("<H", elf, versym["off"] + 2 * i)
        if ver & 0x7FFF in marked and shndx == 0 and cstr(elf, dynstr + name) not in shimmed:
            lacking.append(f"{cstr(elf, dynstr + name)}@{marked[ver & 0x7FFF][0]}")
    if lacking:
        sys.exit(f"weak_versions: {path} needs {', '.join(lacking)}, which the shim does not supply; "
                 "add them to scripts/lavapipe26/isoc23.c")
    for name, off, flags in marked.values():
        struct.pack_into("<H", elf, off, flags | VER_FLG_WEAK)
    open(path, "wb").write(elf)
    print("weak_versions: " + (", ".join(sorted(n for n, _, _ in marked.values())) or "nothing") + " marked weak")


main()
