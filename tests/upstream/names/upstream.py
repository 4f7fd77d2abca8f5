"""An HTTP upstream on 127.0.0.1:3999 for the upstream-name test: logs each CONNECT line to
argv[2], answers 200, then answers the request inside the tunnel itself with "tunnelled";
argv[1] is created once it listens."""
import signal
import socket
import sys
import threading

signal.alarm(50)  # never outlive the test, even if it is killed
ready, log = sys.argv[1], sys.argv[2]
listener = socket.create_server(("127.0.0.1", 3999))
open(ready, "w").close()


def head(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


def serve(c):
    with c:
        try:
            with open(log, "a") as f:
                f.write(head(c) + "\n")
            c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            head(c)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntunnelled")
        except OSError:
            pass


while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
