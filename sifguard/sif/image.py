"""A SIF image on disk: read objects, append one, remove one — in place.

Appending never copies the image and is ordered so that a process killed at any
instant leaves an image that loads, with every earlier object and signature intact:

1. the new object's bytes go past the end of the data section (nothing points there yet);
2. its descriptor is written into a free slot with ``used = 0``, then the single
   ``used`` byte is flipped to 1 (one-byte writes cannot tear);
3. the header (free count, data size, modified time) is rewritten last, in one
   128-byte write inside the first page.

A crash between 2 and 3 leaves a header whose counters lag by one object; readers
(ours and Go's) recompute the data end from the descriptors, so nothing breaks.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sifguard.errors import SifFormatError
from sifguard.sif.format import (
    DEFAULT_LAUNCH_SCRIPT, DESCRIPTOR_SIZE, DT_PARTITION, GROUP_MASK, HEADER_SIZE, MAGIC,
    VERSION, ZERO_TIME, Descriptor, Header, check_header_bounds, parse_descriptor_table,
)

CHUNK = 1 << 20        # streaming read size: bounded memory whatever the image size
Progress = Callable[[int], None]


def _align(n: int, a: int) -> int:
    return n if a <= 1 else (n + a - 1) // a * a


@dataclass(frozen=True)
class NewObject:
    """What a caller wants appended; the image decides ids, offsets and times."""

    datatype: int
    data: bytes | None = None
    path: str | None = None          # stream the data from this file instead of `data`
    group: int = 0                   # 0: no group
    linked_id: int = 0               # raw linked id (object id, or group | GROUP_MASK)
    name: bytes = b""
    extra: bytes = b""
    alignment: int = 0               # 0: 4096 for partitions, 1 otherwise (as Go)


class SifImage:
    """An open SIF file. Use as a context manager; writable images hold an exclusive lock."""

    def __init__(self, path: str, writable: bool = False, fd: int | None = None):
        """Open `path`; or, with `fd`, read the file that descriptor already holds (a
        duplicate is kept, so the caller's fd stays the caller's to close)."""
        self.path = path
        self.writable = writable
        try:
            self._fd = os.dup(fd) if fd is not None else \
                os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
        except IsADirectoryError:
            raise SifFormatError(f"{path}: is a directory, not a SIF image") from None
        except OSError as e:
            raise SifFormatError(f"{path}: cannot open: {e.strerror}") from None
        try:
            if writable:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._load()
        except BaseException:
            os.close(self._fd)
            raise

    # --- loading -------------------------------------------------------------
    def _load(self) -> None:
        st = os.fstat(self._fd)
        self.stat = st
        self.file_size = st.st_size
        raw = os.pread(self._fd, HEADER_SIZE, 0)
        self.header = Header.unpack(raw)
        check_header_bounds(self.header, self.file_size)
        table = os.pread(self._fd, self.header.descriptors_total * DESCRIPTOR_SIZE,
                         self.header.descriptors_offset)
        self.slots = parse_descriptor_table(self.header, table, self.file_size)
        self.objects = [d for d in self.slots if d.used]
        ids = [d.id for d in self.objects]
        if len(set(ids)) != len(ids):
            raise SifFormatError("corrupt descriptor table: duplicate object ids")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "SifImage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def fileno(self) -> int:
        return self._fd

    # --- queries -------------------------------------------------------------
    def object(self, oid: int) -> Descriptor:
        for d in self.objects:
            if d.id == oid:
                return d
        raise SifFormatError(f"no object with id {oid}")

    def group_ids(self) -> list[int]:
        return sorted({d.group_id for d in self.objects if d.group_id})

    def group_objects(self, group: int) -> list[Descriptor]:
        return [d for d in self.objects if d.group_id == group]

    def min_id(self, raw_group: int) -> int:
        """Smallest object id with this raw group id (mask included), as Go's minIDs map."""
        return min(d.id for d in self.objects if d.raw_group == raw_group)

    def signatures_for_group(self, group: int) -> list[Descriptor]:
        link = group | GROUP_MASK
        return [d for d in self.objects if d.is_signature and d.linked_id == link]

    def signatures_for_object(self, oid: int) -> list[Descriptor]:
        return [d for d in self.objects if d.is_signature and d.linked_id == oid]

    def read_object(self, d: Descriptor, limit: int = 64 << 20) -> bytes:
        """Whole object bytes; for small objects (signatures, metadata) only."""
        if d.size > limit:
            raise SifFormatError(f"object {d.id} is {d.size} bytes, larger than {limit} allowed here")
        data = os.pread(self._fd, d.size, d.offset)
        if len(data) != d.size:
            raise SifFormatError(f"object {d.id}: truncated data")
        return data

    def iter_object(self, d: Descriptor, progress: Progress | None = None,
                    chunk: int = CHUNK) -> Iterator[memoryview]:
        """Stream an object's bytes through one reused buffer (`preadv`): resident memory
        is bounded by `chunk` whatever the image size, and a file truncated or rewritten
        under us is a clean error (an mmap would turn truncation into SIGBUS). Each view
        is valid only until the next one is produced."""
        try:
            os.posix_fadvise(self._fd, d.offset, d.size, os.POSIX_FADV_SEQUENTIAL)
        except (AttributeError, OSError):
            pass
        buf = bytearray(min(chunk, max(d.size, 1)))
        view = memoryview(buf)
        pos, end = d.offset, d.offset + d.size
        while pos < end:
            try:
                n = os.preadv(self._fd, [view[: min(len(buf), end - pos)]], pos)
            except OSError as e:
                raise SifFormatError(f"object {d.id}: read failed: {e.strerror or e}") from None
            if n <= 0:
                raise SifFormatError(f"object {d.id}: unexpected end of file (truncated while being read?)")
            pos += n
            if progress:
                progress(n)
            yield view[:n]

    # --- writing -------------------------------------------------------------
    def _require_writable(self) -> None:
        if not self.writable:
            raise SifFormatError(f"{self.path}: opened read-only")

    def _data_end(self) -> int:
        end = self.header.data_offset
        for d in self.objects:
            end = max(end, d.offset + d.size)
        return end

    def _sync(self) -> None:
        os.fdatasync(self._fd)

    def _write_all(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def _stamp(self, when: int | None) -> int:
        if when is not None:
            return when
        return ZERO_TIME if self.header.is_deterministic else int(time.time())

    def append(self, obj: NewObject, when: int | None = None) -> Descriptor:
        """Append one object in place (crash-ordered, see module doc). Returns its descriptor."""
        self._require_writable()
        free = next((s for s in self.slots if not s.used), None)
        if free is None:
            raise SifFormatError(f"{self.path}: no free descriptor slot left")
        if obj.datatype == DT_PARTITION and len(obj.extra) >= 8 \
                and int.from_bytes(obj.extra[4:8], "little") == 2 \
                and any(d.partition_info() and d.partition_info()["parttype"] == "*System"
                        for d in self.objects):
            raise SifFormatError("image already has a primary system partition")
        t = self._stamp(when)
        data_end = self._data_end()
        align = obj.alignment or (4096 if obj.datatype == DT_PARTITION else 1)
        offset = _align(data_end, align)
        size = self._write_object_data(obj, offset)
        d = Descriptor(
            datatype=obj.datatype, used=0, id=free.slot + 1, raw_group=obj.group | GROUP_MASK,
            linked_id=obj.linked_id, offset=offset, size=size,
            size_with_padding=offset - data_end + size, created=t, modified=t, uid=0, gid=0,
            name_raw=obj.name.ljust(128, b"\x00")[:128], extra=obj.extra.ljust(384, b"\x00")[:384],
            slot=free.slot,
        )
        self._sync()
        slot_off = self.header.descriptors_offset + free.slot * DESCRIPTOR_SIZE
        self._write_all(d.pack(), slot_off)          # step 2a: descriptor, still unused
        self._sync()
        os.pwrite(self._fd, b"\x01", slot_off + 4)   # step 2b: one byte makes it live
        d = d.with_changes(used=1)
        changes = dict(descriptors_free=self.header.descriptors_free - 1,
                       data_size=data_end - self.header.data_offset + d.size_with_padding,
                       modified=t)
        if obj.datatype == DT_PARTITION and d.partition_info()["parttype"] == "*System":
            changes["arch"] = obj.extra[8:11]
        self.header = self.header.with_changes(**changes)
        os.pwrite(self._fd, self.header.pack(), 0)   # step 3: header
        self._sync()
        self.slots[free.slot] = d
        self.objects = [s for s in self.slots if s.used]
        self.file_size = max(self.file_size, offset + size)
        return d

    def _write_object_data(self, obj: NewObject, offset: int) -> int:
        if obj.path is None:
            self._write_all(obj.data or b"", offset)
            return len(obj.data or b"")
        size = 0
        with open(obj.path, "rb") as src:
            while True:
                block = src.read(CHUNK)
                if not block:
                    return size
                self._write_all(block, offset + size)
                size += len(block)

    def remove(self, oid: int, zero: bool = False, compact: bool = False,
               when: int | None = None) -> None:
        """Remove one object: its descriptor is freed (used byte first), data optionally zeroed."""
        self._require_writable()
        d = self.object(oid)
        t = self._stamp(when)
        slot_off = self.header.descriptors_offset + d.slot * DESCRIPTOR_SIZE
        os.pwrite(self._fd, b"\x00", slot_off + 4)   # dead from here on
        self._sync()
        self._write_all(bytes(DESCRIPTOR_SIZE), slot_off)
        if zero:
            pos = 0
            while pos < d.size:
                n = min(CHUNK, d.size - pos)
                self._write_all(bytes(n), d.offset + pos)
                pos += n
        self.slots[d.slot] = Descriptor.unpack(bytes(DESCRIPTOR_SIZE), slot=d.slot)
        self.objects = [s for s in self.slots if s.used]
        changes = dict(descriptors_free=self.header.descriptors_free + 1, modified=t)
        info = d.partition_info()
        if info and info["parttype"] == "*System":
            changes["arch"] = b"00\x00"
        if compact:
            changes["data_size"] = self._data_end() - self.header.data_offset
        self.header = self.header.with_changes(**changes)
        self._sync()
        os.pwrite(self._fd, self.header.pack(), 0)
        self._sync()
        if compact:
            os.ftruncate(self._fd, self.header.data_offset + self.header.data_size)
            self.file_size = self.header.data_offset + self.header.data_size


def create(path: str, objects: list[NewObject], *, deterministic: bool = False,
           launch_script: bytes = DEFAULT_LAUNCH_SCRIPT, uuid: bytes | None = None,
           descriptors: int = 48, descriptors_offset: int = 4096) -> None:
    """Create a new SIF at `path` laid out as Go's sif.CreateContainer does, then append objects.

    Written to a temporary file beside `path` and renamed, so `path` is never half-written.
    """
    t = ZERO_TIME if deterministic else int(time.time())
    if uuid is None:
        uuid = bytes(16) if deterministic else os.urandom(16)
    table = descriptors * DESCRIPTOR_SIZE
    data_offset = descriptors_offset + table
    h = Header(launch_script=launch_script.ljust(32, b"\x00")[:32], magic=MAGIC, version=VERSION,
               arch=b"00\x00", uuid=uuid, created=t, modified=t, descriptors_free=descriptors,
               descriptors_total=descriptors, descriptors_offset=descriptors_offset,
               descriptors_size=table, data_offset=data_offset, data_size=0)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(h.pack())
            f.truncate(data_offset)
        with SifImage(tmp, writable=True) as img:
            for obj in objects:
                img.append(obj, when=t)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
