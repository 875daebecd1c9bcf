"""A TCP proxy a test can cut: what a database failover looks like from the clients' side.

`TcpProxy(target_host, target_port)` forwards every connection made to its port (a `target_host`
that is a directory means PostgreSQL's Unix socket in it, as libpq reads such a host). `cut()` closes
every open connection (with a reset, as a vanished server's would be) and stops listening, so new
connections are refused; `restore()` listens again on the same port. Threads, no event loop: the
test calls it from its own thread while Ray processes talk through it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field

_CHUNK = 65536
_ACCEPT_POLL_S = 0.2


@dataclass(eq=False)  # compared and hashed by identity: kept in a set
class _Pipe:
    client: socket.socket
    server: socket.socket

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                # SO_LINGER 0: close() sends a reset, so the peer sees the connection dropped at once.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


@dataclass
class TcpProxy:
    target_host: str
    target_port: int
    host: str = "127.0.0.1"
    port: int = 0
    connections_total: int = 0
    _listener: socket.socket | None = None
    _pipes: set[_Pipe] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _accepting: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def is_cut(self) -> bool:
        return not self._accepting.is_set()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pipes)

    def cut(self) -> int:
        """Drop every open connection and refuse new ones; returns how many were dropped."""
        self._accepting.clear()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            pipes, self._pipes = set(self._pipes), set()
        for pipe in pipes:
            pipe.close()
        return len(pipes)

    def restore(self) -> None:
        """Listen again, on the same port."""
        if self.is_cut:
            self._listen()

    def stop(self) -> None:
        self.cut()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        listener.settimeout(_ACCEPT_POLL_S)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting.set()
        self._thread = threading.Thread(target=self._accept_loop, args=(listener,), name="tcp-proxy", daemon=True)
        self._thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        try:
            while self._accepting.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                client.settimeout(None)
                try:
                    server = self._connect_target()
                except OSError:
                    _Pipe(client, client).close()
                    continue
                pipe = _Pipe(client, server)
                with self._lock:
                    if not self._accepting.is_set():
                        pipe.close()
                        return
                    self._pipes.add(pipe)
                    self.connections_total += 1
                for source, sink in ((client, server), (server, client)):
                    threading.Thread(target=self._pump, args=(pipe, source, sink), daemon=True).start()
        finally:
            # Closing the listening socket is what makes new connections refused (no SYN backlog).
            with contextlib.suppress(OSError):
                listener.close()

    def _connect_target(self) -> socket.socket:
        if self.target_host.startswith("/"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.settimeout(5)
            server.connect(f"{self.target_host}/.s.PGSQL.{self.target_port}")
        else:
            server = socket.create_connection((self.target_host, self.target_port), timeout=5)
        server.settimeout(None)
        return server

    def _pump(self, pipe: _Pipe, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._pipes.discard(pipe)
        pipe.close()

    def url_for(self, database_url: str) -> str:
        """`database_url` with its host and port replaced by this proxy's."""
        import psycopg

        info = psycopg.conninfo.conninfo_to_dict(database_url)
        info["host"], info["port"] = self.host, str(self.port)
        info.pop("hostaddr", None)
        return psycopg.conninfo.make_conninfo("", **info)
