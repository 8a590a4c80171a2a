"""A TCP proxy in front of the API server whose connection the test breaks, as networks break.

The operator dials the proxy (its kubeconfig names it); TLS passes through untouched. Faults:
- `dead()`: what a lost node or load balancer does. Every open connection goes silent for good: what is
  sent is swallowed, nothing is answered, nothing is closed. New connections are accepted and treated the
  same way until `restore()`; connections made after it work (the old ones stay dead, as their state is
  gone from the lost middlebox).
- `reset()`: every open connection is reset (RST), as a restarted API server or proxy does; new ones work.
- `slow(seconds)`: every chunk is held that long in each direction.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from pathlib import Path

import yaml


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.mode = "pass"
        self.delay = 0.0
        self.connections: list[_Connection] = []
        self.dialled_while_dead = 0  # connections accepted while dead: the client noticed and dialled again
        self.closed = False
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # --- the faults --------------------------------------------------------------------------------

    def dead(self) -> None:
        with self.lock:
            self.mode = "dead"
            for connection in self.connections:
                connection.dead = True

    def restore(self) -> None:
        with self.lock:
            self.mode, self.delay = "pass", 0.0

    def reset(self) -> None:
        with self.lock:
            connections, self.connections = self.connections, []
        for connection in connections:
            connection.reset()

    def slow(self, seconds: float) -> None:
        with self.lock:
            self.mode, self.delay = "slow", seconds

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.reset()

    # --- the plumbing ------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                dead = self.mode == "dead"
                if dead:
                    self.dialled_while_dead += 1
            connection = _Connection(self, client, dead)
            with self.lock:
                self.connections.append(connection)
            connection.start()


class _Connection:
    def __init__(self, proxy: FaultProxy, client: socket.socket, dead: bool):
        self.proxy, self.client, self.dead = proxy, client, dead
        self.server: socket.socket | None = None

    def start(self) -> None:
        if self.dead:
            threading.Thread(target=self._swallow, args=(self.client,), daemon=True).start()
            return
        try:
            self.server = socket.create_connection(self.proxy.upstream, timeout=5)
            self.server.settimeout(None)
        except OSError:
            self.reset()
            return
        for source, target in ((self.client, self.server), (self.server, self.client)):
            threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _swallow(self, source: socket.socket) -> None:
        """Reads and drops everything, answers nothing, closes nothing (the peer's window stays open)."""
        while True:
            try:
                if not source.recv(65536):
                    return
            except OSError:
                return

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if self.dead:
                self._swallow(source)
                return
            if not data:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
                return
            delay = self.proxy.delay
            if delay:
                time.sleep(delay)
            if self.dead:
                self._swallow(source)
                return
            try:
                target.sendall(data)
            except OSError:
                return

    def reset(self) -> None:
        for sock in (self.client, self.server):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                # SO_LINGER with a zero timeout: close() sends a RST instead of a FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()


def proxied_kubeconfig(kubeconfig: str, proxy: FaultProxy, path: Path) -> str:
    """The same credentials, with the server replaced by the proxy (TLS passes through it untouched)."""
    config = yaml.safe_load(Path(kubeconfig).read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = proxy.url
    path.write_text(yaml.safe_dump(config))
    return str(path)


def upstream(kubeconfig: str) -> tuple[str, int]:
    server = yaml.safe_load(Path(kubeconfig).read_text())["clusters"][0]["cluster"]["server"]
    host, port = re.match(r"https://([^:/]+):(\d+)", server).groups()  # type: ignore[union-attr]
    return host, int(port)
