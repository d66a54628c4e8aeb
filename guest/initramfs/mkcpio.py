#!/usr/bin/env python3
"""Write a deterministic newc ("070701") cpio archive for an initramfs.

No root and no cpio tool needed: device nodes are described, not copied.
Every entry has uid/gid 0 and mtime 0, inode numbers are assigned in
order, and entries are sorted by path (parents before children), so the
same inputs always give the same bytes.

Usage:
  mkcpio.py -o OUT [--dir PATH[:MODE]]... [--file PATH:MODE:SRC]...
            [--char PATH:MODE:MAJOR:MINOR]... [--symlink PATH:TARGET]...

PATH is the path inside the archive, without a leading slash; MODE is
octal permission bits (e.g. 0755).
"""

import argparse
import os
import stat
import sys

MAGIC = b"070701"


def pad4(n):
    return (4 - n % 4) % 4


def entry(ino, mode, name, data=b"", nlink=1, rdev=(0, 0)):
    name_bytes = name.encode() + b"\0"
    fields = (
        ino,
        mode,
        0,  # uid
        0,  # gid
        nlink,
        0,  # mtime
        len(data),
        0,  # devmajor
        0,  # devminor
        rdev[0],
        rdev[1],
        len(name_bytes),
        0,  # check
    )
    header = MAGIC + b"".join(b"%08X" % f for f in fields)
    out = header + name_bytes + b"\0" * pad4(len(header) + len(name_bytes))
    return out + data + b"\0" * pad4(len(data))


def parse_mode(text):
    mode = int(text, 8)
    if mode & ~0o7777:
        raise ValueError(f"mode {text} has bits outside 07777")
    return mode


def check_path(path):
    path = path.strip("/")
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"bad archive path: {path!r}")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--dir", action="append", default=[], metavar="PATH[:MODE]")
    ap.add_argument("--file", action="append", default=[], metavar="PATH:MODE:SRC")
    ap.add_argument("--char", action="append", default=[], metavar="PATH:MODE:MAJOR:MINOR")
    ap.add_argument("--symlink", action="append", default=[], metavar="PATH:TARGET")
    args = ap.parse_args()

    entries = {}  # path -> (mode, data, rdev)

    def add(path, value):
        path = check_path(path)
        if path in entries:
            raise ValueError(f"duplicate archive path: {path}")
        entries[path] = value

    try:
        for spec in args.dir:
            path, _, mode = spec.partition(":")
            add(path, (stat.S_IFDIR | parse_mode(mode or "0755"), b"", (0, 0)))
        for spec in args.file:
            path, mode, src = spec.split(":", 2)
            with open(src, "rb") as f:
                data = f.read()
            add(path, (stat.S_IFREG | parse_mode(mode), data, (0, 0)))
        for spec in args.char:
            path, mode, major, minor = spec.split(":")
            add(path, (stat.S_IFCHR | parse_mode(mode), b"", (int(major), int(minor))))
        for spec in args.symlink:
            path, _, target = spec.partition(":")
            if not target:
                raise ValueError(f"--symlink {spec}: no target")
            add(path, (stat.S_IFLNK | 0o777, target.encode(), (0, 0)))
        for path in entries:
            parent = path.rpartition("/")[0]
            if parent and not stat.S_ISDIR(entries.get(parent, (0,))[0]):
                raise ValueError(f"{path}: parent directory {parent} is not in the archive")
    except (ValueError, OSError) as e:
        print(f"mkcpio: error: {e}", file=sys.stderr)
        return 1

    out = bytearray()
    # Sorting by components puts every directory before its contents.
    for ino, path in enumerate(sorted(entries, key=lambda p: p.split("/")), start=1):
        mode, data, rdev = entries[path]
        nlink = 2 if stat.S_ISDIR(mode) else 1
        out += entry(ino, mode, path, data, nlink, rdev)
    out += entry(0, 0, "TRAILER!!!")
    # Pad to a 512-byte block as cpio(1) does; the kernel skips zero padding.
    out += b"\0" * ((512 - len(out) % 512) % 512)

    tmp = f"{args.output}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(out)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
