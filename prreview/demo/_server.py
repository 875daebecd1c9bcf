"""Run an ASGI app with uvicorn on a loopback port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp


class Startable(ABC):
    """`with x:` for anything with start() and stop()."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class BackgroundServer(Startable):
    """An ASGI app served by uvicorn in a daemon thread.

    The socket is bound in `start()` (port 0 picks a free port), so `url` is known before the
    first request and two servers never race for a port. Nothing happens in the constructor.
    """

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0,
                 graceful_shutdown_s: int = 2) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._graceful_shutdown_s = graceful_shutdown_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._bound_port: int | None = None

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the server is not started; call start() first")
        return self._bound_port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._bound_port or self._port))  # a restart keeps its port
        sock.listen(2048)  # uvicorn's default backlog: bursts of connections must not be dropped
        self._bound_port = int(sock.getsockname()[1])
        config = uvicorn.Config(self._app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=self._graceful_shutdown_s)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                  name=f"local-server-{self._bound_port}", daemon=True)
        self._socket, self._server, self._thread = sock, server, thread
        thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server on {self._host} did not start within {timeout_s} s")
            time.sleep(0.005)

    def stop(self, timeout_s: float = 5.0) -> None:
        server, thread, sock = self._server, self._thread, self._socket
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout_s)
            if thread.is_alive():
                # Requests still open past the graceful period: cut them.
                server.force_exit = True
                thread.join(timeout_s)
        if sock is not None:
            sock.close()
        self._server, self._thread, self._socket = None, None, None
        # `port`/`url` keep answering after stop, for messages and for a restart on the same port.
