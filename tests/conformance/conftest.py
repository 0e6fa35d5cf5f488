"""Fixtures for the trove-sdk conformance suite: a real Warren server process on a free loopback
port, an admin client, and per-test namespaces with their own keys."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from trove_sdk import TroveAdminClient, TroveClient

REPO = Path(__file__).resolve().parents[2]
ADMIN_KEY = "trove-sk-conformance-admin-" + secrets.token_hex(8)


@dataclass
class Warren:
    base_url: str
    admin_key: str
    workspace_id: str
    data_dir: Path
    process: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_database_for(data_dir: Path) -> str:
    """With WARREN_TEST_PG_URL set, the PostgreSQL database that belongs to `data_dir` (made on
    first use, so a server restarted on the same directory finds its data again)."""
    server = os.environ["WARREN_TEST_PG_URL"]
    name = "c_" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    exists = subprocess.run(
        ["psql", server, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    if not exists:
        subprocess.run(["psql", server, "-qc", f"CREATE DATABASE {name}"], check=True)
    return server.rsplit("/", 1)[0] + "/" + name


def start_warren(data_dir: Path, extra_env: dict | None = None) -> Warren:
    binary = os.environ.get("WARREN_BIN", str(REPO / "target" / "debug" / "warren"))
    port = _free_port()
    database = {}
    if os.environ.get("WARREN_TEST_PG_URL"):
        database["WARREN_DATABASE"] = pg_database_for(data_dir)
        # What a shareable database requires (every node of a cluster alike).
        database["WARREN_SECRET"] = "conformance-secret-conformance-secret-0"
        if not os.environ.get("WARREN_STORAGE"):
            database["WARREN_SHARED_STORAGE"] = "true"
    env = {
        **os.environ,
        **database,
        "WARREN_ADMIN_KEY": ADMIN_KEY,
        "WARREN_LISTEN": f"127.0.0.1:{port}",
        "WARREN_DATA_DIR": str(data_dir),
        # Test receivers listen on loopback; retries are quick so tests stay short.
        "WARREN_WEBHOOK_ALLOW_PRIVATE": "true",
        "WARREN_WEBHOOK_BACKOFF": "200ms",
        "WARREN_WEBHOOK_MAX_ATTEMPTS": "5",
        # A short exec limit so the 408 test is quick.
        "WARREN_EXEC_TIMEOUT": "3s",
        **(extra_env or {}),
    }
    log = open(data_dir.parent / f"warren-{port}.log", "wb")
    proc = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"warren exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("warren did not become healthy within 30 s")
        time.sleep(0.05)
    me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    return Warren(base, ADMIN_KEY, me["workspace_id"], data_dir, proc)


def stop_warren(w: Warren) -> int:
    """SIGTERM, as an operator would; returns the exit code."""
    w.process.send_signal(signal.SIGTERM)
    return w.process.wait(timeout=30)


def interruptible():
    """For Popen's preexec_fn: the child takes SIGINT as a user's Ctrl-C would, even when
    this run was started in the background (where a shell without job control ignores SIGINT
    and the child would inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Alternator:
    """A reverse proxy on a loopback port that sends each HTTP request to the next of its
    backends in turn, streaming both ways (so an SSE stream flows through as it is written):
    a load balancer with no affinity at all, the harshest a cluster can be put behind.

    Each client connection carries one request: it goes upstream with `Connection: close`,
    the node answers likewise, and the client opens a new connection for the next request,
    which goes to the other node."""

    def __init__(self):
        import asyncio
        import threading

        self.route_to([])
        self._next = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve():
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            await self._server.wait_closed()

        self._thread = threading.Thread(
            target=lambda: self._loop.run_until_complete(serve()), daemon=True)
        self._thread.start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def route_to(self, backends: list[tuple[str, int]]):
        """The nodes requests alternate between (set once they listen: they are started
        knowing the proxy's URL, the public one)."""
        self.backends = backends
        self.sent = [0] * len(backends)

    @staticmethod
    def _without_connection_headers(head: bytes, close: bool) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        kept = [l for l in lines[1:] if l and not l.lower().startswith(("connection:", "keep-alive:"))]
        extra = ["Connection: close"] if close else []
        return "\r\n".join([lines[0], *kept, *extra, "", ""]).encode("latin-1")

    async def _relay_response(self, up_reader, writer, method: str, head: bytes | None = None):
        """Relays one response (whose head may have been read already), framed by its own
        headers (the node keeps the connection open, as it would for a load balancer's
        pool); tells the client to close after it."""
        if head is None:
            head = await up_reader.readuntil(b"\r\n\r\n")
        writer.write(self._without_connection_headers(head, close=True))
        fields = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip().lower()
        status = int(head.split()[1])
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            pass
        elif "chunked" in fields.get("transfer-encoding", ""):
            while True:
                size_line = await up_reader.readuntil(b"\r\n")
                writer.write(size_line)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while (trailer := await up_reader.readuntil(b"\r\n")) != b"\r\n":
                        writer.write(trailer)
                    writer.write(b"\r\n")
                    break
                writer.write(await up_reader.readexactly(size + 2))
                await writer.drain()
        elif "content-length" in fields:
            left = int(fields["content-length"])
            while left:
                chunk = await up_reader.read(min(left, 65536))
                if not chunk:
                    break
                writer.write(chunk)
                left -= len(chunk)
                await writer.drain()
        else:
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        await writer.drain()

    async def _handle(self, reader, writer):
        import asyncio

        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        method = head.split(b" ", 1)[0].decode("latin-1")
        i = self._next
        self._next = (self._next + 1) % len(self.backends)
        self.sent[i] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.backends[i])
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            writer.close()
            return
        fields = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip().lower()
        has_body = int(fields.get("content-length") or 0) > 0 or "transfer-encoding" in fields
        up_head = self._without_connection_headers(head, close=False)
        if has_body and "expect" not in fields:
            # The node says whether it wants the body before any is sent (a 413 for a
            # declared size over the limit comes back at once), as a buffering balancer
            # would: a node that answered early and closed with a body half read would
            # reset the connection, and the answer with it.
            up_head = up_head[:-2] + b"Expect: 100-continue\r\n\r\n"
        up_writer.write(up_head)

        async def send_body(upstream: bool):
            # Once the node stops reading (it answered early), the rest of the body is read
            # and dropped, so the client finishes sending and reads the answer.
            try:
                while chunk := await reader.read(65536):
                    if upstream:
                        try:
                            up_writer.write(chunk)
                            await up_writer.drain()
                        except ConnectionError:
                            upstream = False
            except ConnectionError:
                pass

        body = None
        try:
            verdict = None
            if has_body:
                verdict = await up_reader.readuntil(b"\r\n\r\n")
                if int(verdict.split()[1]) == 100:
                    verdict = None
                    body = asyncio.ensure_future(send_body(True))
                else:
                    body = asyncio.ensure_future(send_body(False))
            await self._relay_response(up_reader, writer, method, verdict)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        if body is not None:
            try:
                await asyncio.wait_for(body, 60)
            except asyncio.TimeoutError:
                pass
        for w in (up_writer, writer):
            try:
                w.close()
            except ConnectionError:
                pass

    def close(self):
        self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(10)


def conformance_nodes() -> int:
    """WARREN_CONFORMANCE_NODES=2 runs the suite against two nodes sharing one PostgreSQL
    database and one store, behind an [`Alternator`]."""
    return int(os.environ.get("WARREN_CONFORMANCE_NODES", "1"))


@pytest.fixture(scope="session")
def warren():
    with tempfile.TemporaryDirectory(prefix="warren-conformance-") as tmp:
        # The sandbox uid must be able to reach the working copies below the data directory.
        os.chmod(tmp, 0o711)
        if conformance_nodes() == 1:
            w = start_warren(Path(tmp) / "data")
            yield w
            assert stop_warren(w) == 0, "graceful shutdown must exit 0"
            return
        assert os.environ.get("WARREN_TEST_PG_URL"), "a cluster needs PostgreSQL"
        first = Path(tmp) / "node-0"
        proxy = Alternator()
        shared = {
            "WARREN_DATABASE": pg_database_for(first),
            "WARREN_STORAGE": os.environ.get("WARREN_STORAGE") or f"file://{tmp}/objects",
            # The links the nodes hand out (browser login) name the proxy, as behind a balancer.
            "WARREN_PUBLIC_URL": proxy.url,
        }
        nodes = [start_warren(Path(tmp) / f"node-{i}", shared) for i in range(conformance_nodes())]
        proxy.route_to([("127.0.0.1", int(n.base_url.rsplit(":", 1)[1])) for n in nodes])
        yield Warren(proxy.url, ADMIN_KEY, nodes[0].workspace_id, nodes[0].data_dir, nodes[0].process)
        proxy.close()
        # Every node served a fair share: the suite really ran across the cluster.
        assert min(proxy.sent) > sum(proxy.sent) // (2 * len(nodes)), proxy.sent
        for n in nodes:
            assert stop_warren(n) == 0, "graceful shutdown must exit 0"


@pytest.fixture
def admin(warren) -> TroveAdminClient:
    with TroveAdminClient.from_api_key(warren.admin_key, base_url=warren.base_url) as c:
        yield c


@pytest.fixture
def ns() -> str:
    """A fresh namespace name, so tests never see each other's files."""
    return "t-" + secrets.token_hex(6)


@pytest.fixture
def key(admin, ns) -> str:
    return admin.create_key(f"agent-{ns}", namespace=ns).api_key


@pytest.fixture
def client(warren, key, ns) -> TroveClient:
    with TroveClient(key, ns, base_url=warren.base_url) as c:
        yield c


@pytest.fixture
def home(tmp_path) -> Path:
    """An empty HOME, so the CLI's profile file is this test's own."""
    h = tmp_path / "home"
    h.mkdir()
    return h


class Receiver:
    """A webhook receiver on a loopback port that records every delivery; it can be told to
    answer 500 to the first N requests."""

    def __init__(self, port: int = 0, fail_first: int = 0):
        import http.server
        import threading

        self.got: list[tuple[dict, bytes]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = outer.fail_first > 0
                outer.fail_first -= 1 if failing else 0
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 20.0) -> list[tuple[dict, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} deliveries, got {len(self.got)}")
            time.sleep(0.05)
        return list(self.got)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def run_cli(home: Path, *args: str, input: str | None = None, env: dict | None = None):
    venv_bin = Path(os.environ.get("TROVE_VENV_BIN", Path(os.sys.executable).parent))
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith("TROVE_")
    } | {"HOME": str(home), "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [str(venv_bin / "trove"), *args],
        input=input,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )
