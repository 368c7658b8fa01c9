#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""bench/clustermap.py IMAGE_DIR [WORK_DIR]: what the clusters of a layer's own (top)
delta hold, in ext4 terms. For a closed ploop image (v1 deltas): reads the chain of
DiskDescriptor.xml, lists the clusters the top delta maps, and for each one the 4 KiB
ext4 blocks that differ from the chain below (what the layer changed; the rest of the
cluster is copied up with them), each classified with dumpe2fs/debugfs on a sparse copy
of the merged disk: superblock, group descriptors, bitmaps, inode table (which
inodes: path), journal, directory or file data (path). Read-only on the image.

WORK_DIR (default: a new /var/tmp/pgd-clustermap.*) receives the merged disk and is
removed at the end unless it was given."""
import os
import re
import struct
import subprocess
import sys
import tempfile
import shutil
import xml.etree.ElementTree as ET
from collections import defaultdict

BLOCK = 4096


def chain_files(image_dir):
    """Delta files, top first."""
    dd = ET.parse(os.path.join(image_dir, "DiskDescriptor.xml")).getroot()
    files = {}
    for img in dd.iter("Image"):
        files[img.findtext("GUID")] = img.findtext("File")
    parents = {}
    for shot in dd.iter("Shot"):
        parents[shot.findtext("GUID")] = shot.findtext("ParentGUID")
    guid = dd.findtext("Snapshots/TopGUID")
    out = []
    while guid in files:
        f = files[guid]
        out.append(f if os.path.isabs(f) else os.path.join(image_dir, f))
        guid = parents.get(guid)
    return out


class Delta:
    def __init__(self, path):
        self.f = open(path, "rb")
        h = self.f.read(64)
        if h[:16] not in (b"WithoutFreeSpace", b"WithouFreSpacExt"):
            sys.exit(f"{path}: not a ploop delta")
        self.v2 = h[:16] == b"WithouFreSpacExt"
        self.sectors, self.nbat = struct.unpack_from("<II", h, 28)
        self.cluster = self.sectors * 512
        self.bat = struct.unpack(f"<{self.nbat}I", self.f.read(4 * self.nbat).ljust(4 * self.nbat, b"\0"))
        self.path = path

    def offset(self, vc):
        if vc >= self.nbat or self.bat[vc] == 0:
            return None
        e = self.bat[vc]
        return e * self.cluster if self.v2 else e * 512

    def read(self, vc):
        self.f.seek(self.offset(vc))
        return self.f.read(self.cluster)


def view(levels, vc):
    """The cluster vc as the chain LEVELS (top first) reads it."""
    for d in levels:
        if d.offset(vc) is not None:
            return d.read(vc)
    return bytes(levels[0].cluster)


def run(args):
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout


def layout(raw):
    """block -> description, for the fixed metadata of every group; inode geometry."""
    out = run(["dumpe2fs", raw])
    meta = {}
    geo = {}
    for key in ("Inode size", "Inodes per group", "Block size", "Journal size", "Flex block group size"):
        m = re.search(rf"^{key}:\s+(\S+)", out, re.M)
        geo[key] = m.group(1) if m else "?"
    group = None
    for line in out.splitlines():
        m = re.match(r"Group (\d+):", line)
        if m:
            group = int(m.group(1))
        for pat, what in ((r"(Primary|Backup) superblock at (\d+), Group descriptors at (\d+)-(\d+)", "sb"),
                          (r"Reserved GDT blocks at (\d+)-(\d+)", "rgdt"),
                          (r"Block bitmap at (\d+)", "bbitmap"),
                          (r"Inode bitmap at (\d+)", "ibitmap"),
                          (r"Inode table at (\d+)-(\d+)", "itable")):
            for m in re.finditer(pat, line):
                if what == "sb":
                    meta[int(m.group(2))] = f"{m.group(1).lower()} superblock (group {group})"
                    for b in range(int(m.group(3)), int(m.group(4)) + 1):
                        meta[b] = f"group descriptors (copy of group {group})"
                elif what == "rgdt":
                    for b in range(int(m.group(1)), int(m.group(2)) + 1):
                        meta[b] = f"reserved GDT (group {group})"
                elif what == "itable":
                    a, z = int(m.group(1)), int(m.group(2))
                    for b in range(a, z + 1):
                        meta[b] = ("itable", group, b - a)
                else:
                    meta[int(m.group(1))] = f"{'block' if what == 'bbitmap' else 'inode'} bitmap (group {group})"
    return meta, geo


def journal_blocks(raw):
    out = run(["debugfs", "-R", "blocks <8>", raw])
    return set(int(x) for x in out.split())


def names(raw, inodes):
    if not inodes:
        return {}
    out = run(["debugfs", "-R", "ncheck -c " + " ".join(str(i) for i in sorted(inodes)), raw])
    res = {}
    for line in out.splitlines()[1:]:
        parts = line.split("\t", 1)
        if len(parts) == 2 and parts[0].strip().isdigit():
            res.setdefault(int(parts[0]), parts[1])
    return res


def owners(raw, blocks):
    if not blocks:
        return {}
    out = run(["debugfs", "-R", "icheck " + " ".join(str(b) for b in sorted(blocks)), raw])
    res = {}
    for line in out.splitlines()[1:]:
        p = line.split()
        if len(p) == 2 and p[0].isdigit() and p[1].isdigit():
            res[int(p[0])] = int(p[1])
    return res


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    image_dir = sys.argv[1]
    work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="pgd-clustermap.", dir="/var/tmp")
    levels = [Delta(p) for p in chain_files(image_dir)]
    top, below = levels[0], levels[1:]
    cl = top.cluster
    bpc = cl // BLOCK
    raw = os.path.join(work, "merged.raw")
    with open(raw, "wb") as out:
        out.truncate(top.nbat * cl)
        for vc in range(top.nbat):
            if any(d.offset(vc) is not None for d in levels):
                out.seek(vc * cl)
                out.write(view(levels, vc))
    meta, geo = layout(raw)
    isize = int(geo["Inode size"])
    ipg = int(geo["Inodes per group"])
    jblocks = journal_blocks(raw)
    mine = [vc for vc in range(top.nbat) if top.offset(vc) is not None]
    changed = {}
    for vc in mine:
        new = top.read(vc)
        old = view(below, vc) if below else bytes(cl)
        changed[vc] = [i for i in range(bpc) if new[i * BLOCK:(i + 1) * BLOCK] != old[i * BLOCK:(i + 1) * BLOCK]]
        changed[vc] = [(vc * bpc + i, new[i * BLOCK:(i + 1) * BLOCK], old[i * BLOCK:(i + 1) * BLOCK])
                       for i in changed[vc]]
    # inode-table blocks: which inodes changed
    ino_changed = {}
    other = []
    for vc in mine:
        for b, new, old in changed[vc]:
            m = meta.get(b)
            if isinstance(m, tuple):
                _, g, idx = m
                first = g * ipg + idx * (BLOCK // isize) + 1
                ino_changed[b] = [first + k for k in range(BLOCK // isize)
                                  if new[k * isize:(k + 1) * isize] != old[k * isize:(k + 1) * isize]]
            elif m is None and b not in jblocks and b != 0:
                other.append(b)
    own = owners(raw, other)
    nm = names(raw, set(i for v in ino_changed.values() for i in v) | set(own.values()))
    kinds = defaultdict(lambda: [0, 0])
    print(f"{image_dir}: {len(levels)} deltas, cluster {cl // 1024} KiB, virtual "
          f"{top.nbat * cl >> 30} GiB; inode size {isize}, {ipg} inodes/group, journal "
          f"{geo['Journal size']}, flex_bg {geo['Flex block group size']}")
    print(f"top delta maps {len(mine)} clusters = {len(mine) * cl // 1024} KiB")
    for vc in mine:
        descr = []
        for b, _, _ in changed[vc]:
            m = meta.get(b)
            if b == 0:
                d, k = "primary superblock", "superblock"
            elif isinstance(m, tuple):
                ids = ino_changed.get(b, [])
                d = f"inode table g{m[1]}: " + ", ".join(f"{i} {nm.get(i, '?')}" for i in ids)
                k = "inode table"
            elif m is not None:
                d = m
                k = re.sub(r" \(.*", "", m)
            elif b in jblocks:
                d, k = "journal", "journal"
            elif b in own:
                d = f"data of inode {own[b]} {nm.get(own[b], '?')}"
                k = "file/dir data"
            else:
                d, k = "free block (not in use)", "free block"
            kinds[k][0] += 1
            descr.append(f"    block {b}: {d}")
        first = changed[vc][0][0] if changed[vc] else vc * bpc
        k = "journal" if all(b in jblocks for b, _, _ in changed[vc]) and changed[vc] else None
        for b, _, _ in changed[vc][:1]:
            pass
        print(f"  vc {vc} (blocks {vc * bpc}-{vc * bpc + bpc - 1}): {len(changed[vc])} of {bpc} blocks changed")
        if k == "journal":
            print(f"    blocks {first}-{changed[vc][-1][0]}: journal ({len(changed[vc])} blocks)")
        else:
            print("\n".join(descr) if descr else "    (no block differs from the chain below)")
    print("changed 4 KiB blocks by kind: " + ", ".join(f"{k} {v[0]}" for k, v in sorted(kinds.items())))
    if len(sys.argv) <= 2:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
