"""A TCP proxy in front of the test PostgreSQL that breaks connections on purpose.

It listens on 127.0.0.1 only and forwards each connection to the test server (its Unix socket,
or the host and port of QSNAP_TEST_DSN). It reads the frontend protocol just enough to see
queries: the startup packet (an SSL or GSS request is answered 'N'), then typed messages with
4-byte lengths, whose 'Q' and 'P' texts a fault can wait for. Faults, each for the next
``times`` connections that send a statement holding ``marker`` (any statement without one):

- ``cut``: after ``after_bytes`` more bytes of the server's replies, close both sides;
- ``reset``: instead of forwarding the statement, reset both sides (RST);
- ``stall``: forward the statement, then forward nothing more and close nothing;
- ``lose_commit_reply``: forward the next COMMIT, and once the server has answered it, close
  both sides without passing the answer on (the commit happened; the client cannot know);
- ``orphan``: forward the statement, then close the client's side only: the server session
  lives on (as behind a router that forgot the connection) until the proxy stops.

``cut_all`` closes every connection at once, wherever it stands (a network path going away).

A stall is invisible to TCP on one host: the proxy's kernel still acknowledges every probe.
``namespace=True`` puts the listening socket in a private network namespace (needs root), where
a stall also takes the loopback link down, so that the client's keepalives and
``tcp_user_timeout`` see a dead peer; ``command`` runs a program inside that namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import selectors
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.engine import make_url

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IO_TIMEOUT = 60.0  # seconds: the longest the proxy waits on anything, so it never outlives a test

# run argv[2:] in the network namespace whose file is argv[1]
_ENTER_NAMESPACE = (
    "import ctypes, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
    "if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:\n"
    "    sys.exit(f'setns failed: {os.strerror(ctypes.get_errno())}')\n"
    "os.close(fd)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


@dataclass
class Fault:
    action: str
    marker: bytes | None = None
    after_bytes: int = 0
    times: int = 1


def upstream_address(url: str) -> tuple[int, object]:
    """(address family, address) of the server a libpq or SQLAlchemy URL names."""
    parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://", 1))
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    if host.startswith("/"):
        return socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
    return socket.AF_INET, (host, port)


def _set_link(ctl: socket.socket, up: bool) -> None:
    request = struct.pack("16sh14x", b"lo", 0)
    flags = struct.unpack("16sh14x", fcntl.ioctl(ctl, SIOCGIFFLAGS, request))[1]
    flags = flags | IFF_UP if up else flags & ~IFF_UP
    fcntl.ioctl(ctl, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags))


class FaultProxy:
    def __init__(self, server_url: str, *, namespace: bool = False) -> None:
        self.family, self.address = upstream_address(server_url)
        self.fired: list[tuple[str, int]] = []
        self.connections = 0
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._namespace_fd: int | None = None
        self._ctl: socket.socket | None = None
        if namespace:
            self._listener = self._listen_in_namespace()
        else:
            self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._listener.settimeout(0.1)
        self._accepting = threading.Thread(target=self._accept, name="faultproxy", daemon=True)
        self._accepting.start()

    # --- setup ------------------------------------------------------------------------------

    def _listen_in_namespace(self) -> socket.socket:
        """A listening socket in a new network namespace, made on a thread that then returns
        to ours (a namespace switch is per thread; sockets keep the namespace they began in)."""
        libc = ctypes.CDLL(None, use_errno=True)
        made: dict[str, object] = {}

        def make() -> None:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                if libc.unshare(CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) (root needed)")
                made["fd"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
                ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                made["ctl"] = ctl
                _set_link(ctl, True)
                made["listener"] = socket.create_server(("127.0.0.1", 0))
                if libc.setns(home, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
            except OSError as exc:
                made["error"] = exc
            finally:
                os.close(home)

        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        if "error" in made:
            raise made["error"]
        self._namespace_fd = made["fd"]
        self._ctl = made["ctl"]
        return made["listener"]

    def url(self, db_url: str) -> str:
        """The same database, reached through the proxy over TCP."""
        url = make_url(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
        url = url.difference_update_query(["host", "port"])
        return url.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the proxy's network namespace, where its port is reachable."""
        assert self._namespace_fd is not None, "the proxy has no namespace of its own"
        path = f"/proc/{os.getpid()}/fd/{self._namespace_fd}"
        return [sys.executable, "-c", _ENTER_NAMESPACE, path, *argv]

    def heal(self) -> None:
        """Bring the namespace's link back up after a stall (the stalled connection stays)."""
        if self._ctl is not None:
            _set_link(self._ctl, True)

    # --- faults -----------------------------------------------------------------------------

    def add(self, action: str, marker: str | None = None, *, after_bytes: int = 0, times: int = 1):
        with self._lock:
            self._faults.append(
                Fault(action, marker.encode() if marker else None, after_bytes, times)
            )

    def cut(self, after_bytes: int, marker: str | None = None, times: int = 1) -> None:
        self.add("cut", marker, after_bytes=after_bytes, times=times)

    def reset(self, marker: str | None = None, times: int = 1) -> None:
        self.add("reset", marker, times=times)

    def stall(self, marker: str | None = None, times: int = 1) -> None:
        self.add("stall", marker, times=times)

    def lose_commit_reply(self, marker: str | None = None, times: int = 1) -> None:
        self.add("lose_commit_reply", marker, times=times)

    def orphan(self, marker: str | None = None, times: int = 1) -> None:
        self.add("orphan", marker, times=times)

    def cut_all(self) -> None:
        """Close every connection now, both sides (as when a network path goes away)."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._fire("cut_all", 0)

    def wait_fired(self, action: str, count: int = 1, timeout: float = IO_TIMEOUT) -> bool:
        """Whether ``action`` has struck ``count`` connections within ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(
                lambda: sum(1 for a, _ in self.fired if a == action) >= count, timeout
            )

    def _take(self, body: bytes) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and (fault.marker is None or fault.marker in body):
                    fault.times -= 1
                    return Fault(fault.action, fault.marker, fault.after_bytes, 1)
        return None

    def _fire(self, action: str, number: int) -> None:
        with self._changed:
            self.fired.append((action, number))
            self._changed.notify_all()

    # --- relaying ---------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.connections += 1
                number = self.connections
                self._sockets.add(client)
            thread = threading.Thread(
                target=self._relay, args=(client, number), name=f"faultproxy {number}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _connect_upstream(self) -> socket.socket:
        server = socket.socket(self.family, socket.SOCK_STREAM)
        server.settimeout(IO_TIMEOUT)
        server.connect(self.address)
        with self._lock:
            self._sockets.add(server)
        return server

    def _relay(self, client: socket.socket, number: int) -> None:
        server: socket.socket | None = None
        try:
            client.settimeout(IO_TIMEOUT)
            startup = _read_startup(client)
            if startup is None:
                return
            server = self._connect_upstream()
            server.sendall(startup)
            _Connection(self, number, client, server).run()
        except OSError:
            pass
        finally:
            if not self._stop.is_set():
                for sock in (client, server):
                    self._close(sock)

    def _close(self, sock: socket.socket | None, *, reset: bool = False) -> None:
        if sock is None:
            return
        if reset:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.close()
        with self._lock:
            self._sockets.discard(sock)

    def _park(self) -> None:
        """Hold a stalled or orphaned connection's sockets open until the proxy stops."""
        self._stop.wait()

    # --- stopping ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self.heal()
        self._accepting.join(IO_TIMEOUT)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            # a shutdown also wakes a relay thread blocked in a send
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            self._close(sock)
        for thread in self._threads:
            thread.join(IO_TIMEOUT)
        if self._ctl is not None:
            self._ctl.close()
        if self._namespace_fd is not None:
            os.close(self._namespace_fd)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_startup(client: socket.socket) -> bytes | None:
    """The client's startup packet, having answered 'N' to any SSL or GSS encryption request."""
    while True:
        head = _read_exact(client, 8)
        if head is None:
            return None
        length, code = struct.unpack("!ii", head)
        rest = _read_exact(client, length - 8)
        if rest is None:
            return None
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            client.sendall(b"N")
            continue
        return head + rest


class _Connection:
    """One proxied session: whole client messages forwarded one by one (so that a fault can
    strike at a statement), the server's bytes passed straight on."""

    def __init__(
        self, proxy: FaultProxy, number: int, client: socket.socket, server: socket.socket
    ):
        self.proxy = proxy
        self.number = number
        self.client = client
        self.server = server
        self.pending = b""
        self.fault: Fault | None = None
        self.waiting_commit = False
        self.reply_budget: int | None = None

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.client, selectors.EVENT_READ, "client")
        selector.register(self.server, selectors.EVENT_READ, "server")
        try:
            while not self.proxy._stop.is_set():
                for key, _ in selector.select(0.1):
                    if key.data == "client":
                        if not self._from_client():
                            return
                    elif not self._from_server():
                        return
        finally:
            selector.close()

    def _from_client(self) -> bool:
        data = self.client.recv(65536)
        if not data:
            return False
        self.pending += data
        while len(self.pending) >= 5:
            length = struct.unpack("!i", self.pending[1:5])[0]
            if len(self.pending) < 1 + length:
                break
            message, self.pending = self.pending[: 1 + length], self.pending[1 + length :]
            if not self._forward(message):
                return False
        return True

    def _forward(self, message: bytes) -> bool:
        kind, body = message[:1], message[5:]
        statement = body if kind in (b"Q", b"P") else b""
        if self.fault is None and statement:
            self.fault = self.proxy._take(statement)
            if self.fault is not None:
                return self._strike(message)
        if self.waiting_commit and kind == b"Q" and body.rstrip(b"\0").strip().upper() == b"COMMIT":
            self.server.sendall(message)
            self._lose_reply()
            return False
        self.server.sendall(message)
        return True

    def _strike(self, message: bytes) -> bool:
        action = self.fault.action
        if action == "reset":
            self.proxy._fire(action, self.number)
            self.proxy._close(self.client, reset=True)
            self.proxy._close(self.server, reset=True)
            return False
        self.server.sendall(message)
        if action == "cut":
            self.reply_budget = self.fault.after_bytes
            return True
        if action == "lose_commit_reply":
            self.waiting_commit = True
            return True
        self.proxy._fire(action, self.number)
        if action == "orphan":
            self.proxy._close(self.client)
        elif self.proxy._ctl is not None:
            _set_link(self.proxy._ctl, False)
        self.proxy._park()
        return False

    def _lose_reply(self) -> None:
        """The COMMIT is on its way: wait until the server answers it, then close both sides."""
        self.server.settimeout(IO_TIMEOUT)
        with contextlib.suppress(OSError):
            self.server.recv(1)
        self.proxy._fire("lose_commit_reply", self.number)
        self.proxy._close(self.client)
        self.proxy._close(self.server)

    def _from_server(self) -> bool:
        data = self.server.recv(65536)
        if not data:
            return False
        if self.reply_budget is not None and len(data) >= self.reply_budget:
            self.client.sendall(data[: self.reply_budget])
            self.proxy._fire("cut", self.number)
            return False
        if self.reply_budget is not None:
            self.reply_budget -= len(data)
        self.client.sendall(data)
        return True
