"""A TCP relay for fault probes: `python benchmarks/tcp_proxy.py PORT_FILE TARGET_PORT` listens on a
free port of 127.0.0.1 (written to PORT_FILE) and relays every connection to TARGET_PORT.
SIGSTOP it and the clients behind it meet a server that hangs without closing."""
from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def started(folder: Path, target: int, timeout: float = 30) -> Iterator[tuple[int, subprocess.Popen]]:
    """This relay in a process of its own, in front of 127.0.0.1:target: (its port, the process)."""
    port_file = folder / "proxy-port"
    proxy = subprocess.Popen([sys.executable, __file__, str(port_file), str(target)])
    try:
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text():
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the TCP proxy did not start")
            time.sleep(0.1)
        yield int(port_file.read_text()), proxy
    finally:
        proxy.send_signal(signal.SIGCONT)
        proxy.kill()
        proxy.wait()


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
