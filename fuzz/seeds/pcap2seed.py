#!/usr/bin/env python3
"""Turns a warren capture into one fuzz seed for the `frame` target (format: see
src/runtime/fuzzing.rs): the frames the container(s) sent, in order, as records.

usage: pcap2seed.py single|bridge CAPTURE.pcap SEED
single: frames not sent by the gateway (source MAC 52:55:...), marked checksum-trusted,
        with the container's MAC made runtime::fuzzing::CONTAINER_MAC.
bridge: frames of 02:42:0a:59:00:02 (port A) and ...:03 (port B), each behind a vnet
        header saying "checksum valid", as the port's TAP would deliver them.
"""
import struct
import sys

VNET_HDR_LEN = 10
VIRTIO_NET_HDR_F_DATA_VALID = 2


def frames(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic != 0xA1B2C3D4:
        sys.exit(f"{path}: not a little-endian microsecond pcap")
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack("<IIII", data[off:off + 16])
        yield data[off + 16:off + 16 + incl]
        off += 16 + incl


CONTAINER_MAC = bytes([0x02, 0, 0, 0, 0, 0x01])  # runtime::fuzzing::CONTAINER_MAC


def eui64(mac):
    return bytes([mac[0] ^ 2]) + mac[1:3] + b"\xff\xfe" + mac[3:6]


def main():
    mode, src, dst = sys.argv[1:4]
    out = bytearray([1 if mode == "bridge" else 0])
    for f in frames(src):
        if len(f) < 14 or f[6:8] == b"\x52\x55":
            continue  # sent by warren's gateway
        if mode == "single":
            # The kernel gave the TAP a random MAC; the harness knows the container as
            # CONTAINER_MAC, also in its IPv6 link-local address (checksums are trusted).
            mac = bytes(f[6:12])
            f = f.replace(mac, CONTAINER_MAC).replace(eui64(mac), eui64(CONTAINER_MAC))
            rec_flags, body = 2, f
        else:
            port = {b"\x02\x42\x0a\x59\x00\x02": 0, b"\x02\x42\x0a\x59\x00\x03": 1}.get(bytes(f[6:12]))
            if port is None:
                continue
            hdr = bytes([VIRTIO_NET_HDR_F_DATA_VALID]) + bytes(VNET_HDR_LEN - 1)
            rec_flags, body = port, hdr + f
        body = body[:0xFFFF]
        out += bytes([rec_flags]) + struct.pack("<H", len(body)) + body
    open(dst, "wb").write(out)


main()
