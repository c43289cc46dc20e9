"""A TCP proxy the tests control: forward, cut (reset every open connection) or stall
(keep connections open but forward nothing: a half-open link, as after a silent network
partition). New connections after a cut or stall are forwarded normally."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from typing import Self


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._closed = threading.Event()
        self.cuts = 0
        self.stalls = 0

    def start(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            stalled = threading.Event()
            with self._lock:
                self._pairs.append((client, upstream, stalled))
            threading.Thread(
                target=self._pump, args=(client, upstream, stalled), daemon=True
            ).start()

    def _pump(self, a: socket.socket, b: socket.socket, stalled: threading.Event) -> None:
        peers = {a: b, b: a}
        try:
            while not self._closed.is_set():
                if stalled.is_set():
                    # read nothing, send nothing: both ends see a silent peer (wait rather
                    # than select(), which would return at once for the unread data)
                    self._closed.wait(0.2)
                    continue
                readable, _, _ = select.select([a, b], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # ValueError: a cut() closed the socket under select()
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> int:
        """Reset every open connection (RST, as a crashed middlebox would)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b, _ in pairs:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
        self.cuts += 1
        return len(pairs)

    def stall(self) -> int:
        """Stop forwarding on every open connection without closing it."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for _, _, stalled in pairs:
            stalled.set()
        self.stalls += 1
        return len(pairs)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
