"""A TCP relay for fault probes: `python benchmarks/tcp_proxy.py PORT_FILE TARGET_PORT` listens on a
free port of 127.0.0.1 (written to PORT_FILE) and relays every connection to TARGET_PORT.
SIGSTOP it and the clients behind it meet a server that hangs without closing."""
from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main() -> None:
    port_file, target = Path(sys.argv[1]), int(sys.argv[2])
    server = socket.create_server(("127.0.0.1", 0))
    port_file.write_text(str(server.getsockname()[1]))
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", target))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
