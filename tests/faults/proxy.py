"""A loopback TCP proxy in front of PostgreSQL that injects network faults on demand.

Used by the fault tests: it forwards bytes both ways until armed, then

* ``drop_commit_reply()``: forwards the next ``COMMIT`` to the server, swallows the
  server's answer and cuts the client's connection — the server committed, the client
  cannot know;
* ``cut_on(marker)``: cuts the connection when the client sends a message containing
  ``marker``, before the server sees it — the statement never ran;
* ``blackhole = True``: new connections are accepted and never answered, existing ones
  stop forwarding — a server behind a firewall that drops packets.

Each arming is one-shot and reports through an :class:`asyncio.Event`, so tests wait on
the event (never on a sleep). Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

__all__ = ["FaultProxy"]

_CHUNK = 65536


@dataclass
class _Arm:
    marker: bytes
    forward: bool  # forward the triggering message to the server before cutting
    fired: asyncio.Event = field(default_factory=asyncio.Event)


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``, with faults on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._arm: _Arm | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.blackhole = False
        self.connections = 0

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by this proxy's."""
        proxied = make_url(url).set(host="127.0.0.1", port=self.port)
        return proxied.render_as_string(hide_password=False)

    @classmethod
    def in_front_of(cls, url: str) -> FaultProxy:
        """A proxy (not yet started) forwarding to the server of ``url``."""
        target = make_url(url)
        return cls(target.host or "127.0.0.1", target.port or 5432)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def drop_commit_reply(self) -> asyncio.Event:
        """Arm: forward the next COMMIT, drop its reply, cut the client. Returns 'fired'."""
        self._arm = _Arm(b"Q\x00\x00\x00\x0cCOMMIT;\x00", forward=True)  # the simple query
        return self._arm.fired

    def cut_on(self, marker: bytes) -> asyncio.Event:
        """Arm: cut the connection carrying the next message with ``marker`` (not forwarded)."""
        self._arm = _Arm(marker, forward=False)
        return self._arm.fired

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        if self.blackhole:
            # Accept, read and discard: nothing ever comes back.
            with contextlib.suppress(Exception):
                while await reader.read(_CHUNK):
                    pass
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        swallow = asyncio.Event()  # set: drop the server's next reply, then cut both sides
        cut = asyncio.Event()

        async def client_to_server() -> None:
            try:
                while data := await reader.read(_CHUNK):
                    if self.blackhole:
                        continue
                    arm = self._arm
                    if arm is not None and arm.marker in data:
                        self._arm = None
                        if arm.forward:
                            swallow.set()
                            up_writer.write(data)
                            await up_writer.drain()
                            # The reply pump cuts the client once the server answered.
                            await cut.wait()
                            arm.fired.set()
                        else:
                            arm.fired.set()
                        break
                    up_writer.write(data)
                    await up_writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                up_writer.close()

        async def server_to_client() -> None:
            try:
                while data := await up_reader.read(_CHUNK):
                    if swallow.is_set():
                        # The server has answered COMMIT, so it has committed: cut now.
                        cut.set()
                        break
                    if self.blackhole:
                        continue
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                cut.set()
                writer.close()
                up_writer.close()

        self._spawn(client_to_server())
        self._spawn(server_to_client())
