"""A DNS server on 127.0.0.1:53 for the upstream-name test (inside its network namespace):
A 127.0.0.1 for the names in argv[3:], NOERROR without answers for their other types,
NXDOMAIN for anything else; every question is appended to argv[2]; argv[1] is created once
it listens."""
import signal
import socket
import struct
import sys

signal.alarm(50)  # never outlive the test, even if it is killed
ready, log, known = sys.argv[1], sys.argv[2], set(sys.argv[3:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
open(ready, "w").close()
while True:
    q, peer = s.recvfrom(4096)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
        i += 1 + q[i]
    name, qtype, end = ".".join(labels), struct.unpack("!H", q[i + 1:i + 3])[0], i + 5
    with open(log, "a") as f:
        f.write(f"{name} {qtype}\n")
    answer = name in known and qtype == 1
    flags = 0x8180 if name in known else 0x8183
    reply = q[:2] + struct.pack("!HHHHH", flags, 1, int(answer), 0, 0) + q[12:end]
    if answer:
        reply += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_aton("127.0.0.1")
    s.sendto(reply, peer)
