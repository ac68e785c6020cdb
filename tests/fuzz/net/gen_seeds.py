#!/usr/bin/python3
"""Writes the seed corpus of fuzz-net: valid frames for the stack at
10.0.0.1:8080 (MAC 02:00:00:00:00:01) in the record format of fuzz_net.c."""
import os
import struct
import sys

US_MAC = bytes([2, 0, 0, 0, 0, 1])
CL_MAC = bytes([2, 0, 0, 0, 0, 2])
US_IP = bytes([10, 0, 0, 1])
CL_IP = bytes([10, 0, 0, 2])


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def eth(payload, etype=0x0800, dst=US_MAC):
    return dst + CL_MAC + struct.pack("!H", etype) + payload


def ipv4(proto, l4, src=CL_IP):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0, src, US_IP)
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + l4


def tcp(flags, seq, ack, data=b"", opts=b"", sport=40000, dport=8080, win=65535):
    off = (20 + len(opts)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, win, 0, 0) + opts
    pseudo = CL_IP + US_IP + struct.pack("!BBH", 0, 6, len(hdr) + len(data))
    c = csum(pseudo + hdr + data)
    hdr = hdr[:16] + struct.pack("!H", c) + hdr[18:]
    return eth(ipv4(6, hdr + data))


def rec(frame, ctl=0):
    return bytes([ctl]) + struct.pack("!H", len(frame)) + frame


SYN_OPTS = bytes([2, 4, 5, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7])
FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
ISN = 1000

arp_req = eth(struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, CL_MAC, CL_IP, b"\0" * 6, US_IP),
              0x0806, b"\xff" * 6)
icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 0x42, 1) + b"ping" * 8)
icmp[2:4] = struct.pack("!H", csum(bytes(icmp)))
ping = eth(ipv4(1, bytes(icmp)))

# The SYN-ACK's ISN is secret-derived, so ACK-bearing records set the
# checksum-ok bit and the fuzzer mutates the ack field from there.
seeds = {
    "arp-request": rec(arp_req),
    "icmp-echo": rec(ping),
    "syn": rec(tcp(SYN, ISN, 0, opts=SYN_OPTS)),
    "syn-plain": rec(tcp(SYN, ISN, 0)),
    "handshake-data-fin": rec(arp_req) + rec(tcp(SYN, ISN, 0, opts=SYN_OPTS))
    + rec(tcp(ACK, ISN + 1, 1), 0x10) + rec(tcp(ACK | PSH, ISN + 1, 1, b"GET / HTTP/1.1\r\n\r\n"), 0x31)
    + rec(tcp(ACK | FIN, ISN + 19, 1), 0x41),
    "data-ooo": rec(tcp(SYN, ISN, 0, opts=SYN_OPTS)) + rec(tcp(ACK, ISN + 1 + 100, 1, b"x" * 100), 0x10)
    + rec(tcp(ACK, ISN + 1, 1, b"y" * 100), 0x10),
    "rst": rec(tcp(SYN, ISN, 0)) + rec(tcp(RST, ISN + 1, 0), 0x10),
    "closed-port": rec(tcp(SYN, ISN, 0, dport=9999)),
    "timers": rec(tcp(SYN, ISN, 0, opts=SYN_OPTS)) + rec(tcp(ACK, ISN + 1, 1), 0x1f)
    + rec(tcp(ACK, ISN + 1, 1), 0xaf),
    # Shared frames (action 7: two hinted runs of odd length), ACKed, sent
    # again, then left unACKed until the RTO resends them.
    "hinted-runs": rec(arp_req) + rec(tcp(SYN, ISN, 0, opts=SYN_OPTS)) + rec(tcp(ACK, ISN + 1, 1), 0xf0)
    + rec(tcp(ACK, ISN + 1, 1), 0xf0) + rec(arp_req, 0x0f) + rec(arp_req, 0x0f),
}

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
