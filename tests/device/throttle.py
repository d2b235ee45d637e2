"""An ssh ProxyCommand that forwards to HOST:PORT, sending at most RATE bytes a second: a slow link, so a test can
interrupt a copy midway.

    ssh -o "ProxyCommand=python3 throttle.py 127.0.0.1 2222 1000000" ...
"""

from __future__ import annotations

import socket
import sys
import threading
import time

CHUNK = 16 << 10


def upload(connection: socket.socket, rate: float) -> None:
    started, sent = time.monotonic(), 0
    while data := sys.stdin.buffer.read1(CHUNK):
        connection.sendall(data)
        sent += len(data)
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))
    connection.shutdown(socket.SHUT_WR)


def main() -> None:
    host, port, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    connection = socket.create_connection((host, port))
    threading.Thread(target=upload, args=(connection, rate), daemon=True).start()
    while data := connection.recv(CHUNK):
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
