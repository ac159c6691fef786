#!/usr/bin/env python3
"""Seeds for the dns, dhcp, api and specs targets. dns: the DNS payloads of the captured
queries in corpus/frame/dns-*.seed (UDP to port 53); dhcp: busybox udhcpc's messages in
corpus/frame/dhcp.seed (UDP to port 67); api and specs: requests and specs as users and
Podman/RootlessKit write them. usage: other.py FUZZ_DIR"""
import os
import struct
import sys

fuzz = sys.argv[1]


def records(path):
    d = open(path, "rb").read()
    o = 1
    while o + 3 <= len(d):
        n = struct.unpack("<H", d[o + 1:o + 3])[0]
        yield d[o + 3:o + 3 + n]
        o += 3 + n


def write(target, name, data):
    os.makedirs(f"{fuzz}/corpus/{target}", exist_ok=True)
    open(f"{fuzz}/corpus/{target}/{name}", "wb").write(data)


n = 0
for f in records(f"{fuzz}/corpus/frame/dhcp.seed"):
    if f[12:14] == b"\x08\x00" and f[23] == 17:
        l4 = 14 + (f[14] & 15) * 4
        if f[l4 + 2:l4 + 4] == b"\x00\x43":
            write("dhcp", f"udhcpc-{n}", f[l4 + 8:])
            n += 1

n = 0
for seed in ("dns-a", "dns-aaaa"):
    for f in records(f"{fuzz}/corpus/frame/{seed}.seed"):
        et = f[12:14]
        if et == b"\x08\x00" and f[23] == 17:
            l4 = 14 + (f[14] & 15) * 4
        elif et == b"\x86\xdd" and f[20] == 17:
            l4 = 14 + 40
        else:
            continue
        if f[l4 + 2:l4 + 4] == b"\x00\x35":
            write("dns", f"{seed}-{n}", f[l4 + 8:])
            n += 1

api = {
    "port-add": '{"execute":"port_add","arguments":{"specs":["8080:80","127.0.0.1:5353:53/udp"]}}',
    "port-list": '{"execute":"port_list"}',
    "port-remove": '{"execute":"port_remove","arguments":{"ids":[1,2]}}',
    "stats": '{"execute":"stats"}',
    "flows": '{"execute":"flows"}',
    "capture": '{"execute":"capture","arguments":{"action":"start","path":"/tmp/x.pcap","count":10}}',
    "add-hostfwd-podman": '{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"0.0.0.0",'
                          '"host_port":8080,"guest_addr":"","guest_port":80}}',
    "add-hostfwd6": '{"execute":"add_hostfwd","arguments":{"proto":"tcp6","host_addr6":"::",'
                    '"host_port":8080,"guest_addr6":"fd00::100","guest_port":80}}',
    "list-hostfwd": '{"execute":"list_hostfwd"}',
    "remove-hostfwd": '{"execute":"remove_hostfwd","arguments":{"id":1}}',
    "daemon-create": '{"op":"network_create","name":"dev","subnet":"10.89.0.0/24","icc":true}',
    "daemon-ls": '{"op":"network_ls"}',
}
for name, text in api.items():
    write("api", name, text.encode())

for i, text in enumerate(["8080:80", "127.0.0.1:8080:80/tcp", "[::1]:8443:443/tcp6", "5353:53/udp",
                          "8000-8010:9000-9010", "0.0.0.0:80:80/udp4", "10.0.2.0/24", "fd00::/64",
                          "52:54:00:12:34:56", "10.0.2.3:53", "[::1]:5353", "65520"]):
    write("specs", f"spec-{i}", text.encode())
