"""SIF v01 on-disk structures: the global header and the descriptor table.

Pure: bytes in, frozen dataclasses out, and back. No file access, no crypto.
All integers are little-endian and the structs are packed, as in sylabs/sif v2.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from sifguard.errors import SifFormatError

HEADER_SIZE = 128
DESCRIPTOR_SIZE = 585
LAUNCH_SCRIPT_LEN = 32
MAGIC = b"SIF_MAGIC\x00"
VERSION = b"01\x00"
DEFAULT_LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"
GROUP_MASK = 0xF0000000
# Go's time.Time{}.Unix(): the "deterministic" timestamp.
ZERO_TIME = -62135596800

_HEADER = struct.Struct("<32s10s3s3s16sqqqqqqqq")
_DESCRIPTOR = struct.Struct("<iBIIIqqqqqqq128s384s")
assert _HEADER.size == HEADER_SIZE and _DESCRIPTOR.size == DESCRIPTOR_SIZE

# Upper bound on descriptor slots we agree to read (Go's default is 48); keeps a
# hostile header from sizing an allocation.
MAX_DESCRIPTORS = 1 << 16

DATATYPES = {
    0x4001: "Def.File",
    0x4002: "Env.Vars",
    0x4003: "JSON.Labels",
    0x4004: "FS",
    0x4005: "Signature",
    0x4006: "JSON.Generic",
    0x4007: "Generic/Raw",
    0x4008: "Cryptographic Message",
    0x4009: "SBOM",
    0x400A: "OCI.RootIndex",
    0x400B: "OCI.Blob",
}
DT_PARTITION = 0x4004
DT_SIGNATURE = 0x4005
DT_CRYPT_MESSAGE = 0x4008
DT_SBOM = 0x4009

FSTYPES = {1: "Squashfs", 2: "Ext3", 3: "Data", 4: "Raw", 5: "Encrypted squashfs"}
PARTTYPES = {1: "System", 2: "*System", 3: "Data", 4: "Overlay"}
HASHTYPES = {1: "sha256", 2: "sha384", 3: "sha512", 4: "blake2s", 5: "blake2b"}
ARCHES = {
    "00": "unknown", "01": "386", "02": "amd64", "03": "arm", "04": "arm64",
    "05": "ppc64", "06": "ppc64le", "07": "mips", "08": "mipsle", "09": "mips64",
    "10": "mips64le", "11": "s390x", "12": "riscv64", "13": "loong64",
}


def _cstr(b: bytes) -> str:
    return b.split(b"\x00", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True)
class Header:
    launch_script: bytes
    magic: bytes
    version: bytes
    arch: bytes
    uuid: bytes
    created: int
    modified: int
    descriptors_free: int
    descriptors_total: int
    descriptors_offset: int
    descriptors_size: int
    data_offset: int
    data_size: int

    @classmethod
    def unpack(cls, raw: bytes) -> "Header":
        if len(raw) < HEADER_SIZE:
            raise SifFormatError(f"truncated: {len(raw)} bytes, a SIF header needs {HEADER_SIZE}")
        h = cls(*_HEADER.unpack_from(raw, 0))
        if h.magic != MAGIC:
            raise SifFormatError("not a SIF image (bad magic)")
        if h.version != VERSION:
            raise SifFormatError(f"unsupported SIF version {h.version.rstrip(bytes(1))!r} (only 01)")
        return h

    def pack(self) -> bytes:
        return _HEADER.pack(
            self.launch_script, self.magic, self.version, self.arch, self.uuid,
            self.created, self.modified, self.descriptors_free, self.descriptors_total,
            self.descriptors_offset, self.descriptors_size, self.data_offset, self.data_size,
        )

    def integrity_bytes(self) -> bytes:
        """What the sylabs/sif v2 header digest covers: launch script, magic, version, UUID."""
        return self.launch_script + self.magic + self.version + self.uuid

    @property
    def arch_name(self) -> str:
        a = _cstr(self.arch)
        return ARCHES.get(a, a or "unknown")

    @property
    def is_deterministic(self) -> bool:
        return self.uuid == bytes(16) and self.created == ZERO_TIME and self.modified == ZERO_TIME

    def with_changes(self, **kw) -> "Header":
        return replace(self, **kw)


@dataclass(frozen=True)
class Descriptor:
    datatype: int
    used: int
    id: int
    raw_group: int
    linked_id: int
    offset: int
    size: int
    size_with_padding: int
    created: int
    modified: int
    uid: int
    gid: int
    name_raw: bytes
    extra: bytes
    slot: int = -1

    @classmethod
    def unpack(cls, raw: bytes, offset: int = 0, slot: int = -1) -> "Descriptor":
        return cls(*_DESCRIPTOR.unpack_from(raw, offset), slot=slot)

    def pack(self) -> bytes:
        return _DESCRIPTOR.pack(
            self.datatype, self.used, self.id, self.raw_group, self.linked_id, self.offset,
            self.size, self.size_with_padding, self.created, self.modified, self.uid, self.gid,
            self.name_raw, self.extra,
        )

    # --- derived views -------------------------------------------------------
    @property
    def group_id(self) -> int:
        """Group id with the mask removed; 0 means "no group"."""
        return self.raw_group & ~GROUP_MASK & 0xFFFFFFFF

    @property
    def linked_group(self) -> int:
        """The group this object is linked to, or 0 when it links an object (or nothing)."""
        return self.linked_id & ~GROUP_MASK & 0xFFFFFFFF if self.linked_id & GROUP_MASK else 0

    @property
    def linked_object(self) -> int:
        return 0 if self.linked_id & GROUP_MASK else self.linked_id

    @property
    def name(self) -> str:
        return _cstr(self.name_raw)

    @property
    def datatype_name(self) -> str:
        return DATATYPES.get(self.datatype, f"unknown({self.datatype:#x})")

    @property
    def is_signature(self) -> bool:
        return self.datatype == DT_SIGNATURE

    def partition_info(self) -> dict | None:
        if self.datatype != DT_PARTITION:
            return None
        fs, pt = struct.unpack_from("<ii", self.extra, 0)
        arch = _cstr(self.extra[8:11])
        return {"fstype": FSTYPES.get(fs, str(fs)), "parttype": PARTTYPES.get(pt, str(pt)),
                "arch": ARCHES.get(arch, arch)}

    def signature_info(self) -> tuple[int, bytes]:
        """(hashtype, entity fingerprint) of a signature descriptor; entity is b'' when all zero."""
        (ht,) = struct.unpack_from("<i", self.extra, 0)
        entity = self.extra[4:4 + 20]
        return ht, (b"" if entity == bytes(20) else entity)

    def integrity_bytes(self, relative_id: int) -> bytes:
        """What the sylabs/sif v2 descriptor digest covers (557 bytes)."""
        return struct.pack(
            "<iBIIqqqq", self.datatype, 1 if self.used else 0, relative_id & 0xFFFFFFFF,
            self.linked_id, self.size, self.created, self.uid, self.gid,
        ) + self.name_raw + self.extra

    def with_changes(self, **kw) -> "Descriptor":
        return replace(self, **kw)


def signature_extra(hashtype: int = 1, entity: bytes = b"") -> bytes:
    return struct.pack("<i", hashtype) + entity.ljust(256, b"\x00") + bytes(384 - 4 - 256)


def parse_descriptor_table(header: Header, table: bytes, file_size: int) -> list[Descriptor]:
    """Parse and bounds-check every slot; returns all slots (used or not) in table order."""
    total = header.descriptors_total
    out = []
    for i in range(total):
        d = Descriptor.unpack(table, i * DESCRIPTOR_SIZE, slot=i)
        if d.used:
            if d.offset < 0 or d.size < 0 or d.offset + d.size > file_size:
                raise SifFormatError(
                    f"object {d.id}: data [{d.offset}, +{d.size}) lies outside the {file_size}-byte file")
            if d.id == 0:
                raise SifFormatError(f"descriptor slot {i} is used but has object id 0")
        out.append(d)
    return out


def check_header_bounds(h: Header, file_size: int) -> None:
    """Reject headers whose table cannot be read from a file of this size."""
    if file_size < HEADER_SIZE:
        raise SifFormatError(f"truncated: {file_size} bytes, a SIF header needs {HEADER_SIZE}")
    if not 0 <= h.descriptors_total <= MAX_DESCRIPTORS:
        raise SifFormatError(f"implausible descriptor count {h.descriptors_total}")
    need = h.descriptors_total * DESCRIPTOR_SIZE
    if h.descriptors_size < need:
        raise SifFormatError(
            f"descriptor table size {h.descriptors_size} is smaller than {h.descriptors_total} descriptors")
    if h.descriptors_offset < HEADER_SIZE or h.descriptors_offset + need > file_size:
        raise SifFormatError(
            f"truncated or corrupt: descriptor table at {h.descriptors_offset} (+{need}) "
            f"is outside the {file_size}-byte file")
    if h.data_offset < 0 or h.data_size < 0:
        raise SifFormatError("negative data section offset or size")
