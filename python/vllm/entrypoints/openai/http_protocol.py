"""uvicorn's h11 protocol with a deadline for request headers.

uvicorn times out idle keep-alive connections, but not a connection that
trickles its request line and headers a byte at a time (slowloris): its
keep-alive timer is cancelled by every byte received and never armed before
the first response. Here each request's headers must be complete within
timeout_header seconds of its first byte (or of connecting); otherwise the
connection is closed."""
from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("vllm.entrypoints.openai.api_server")


def protocol_with_header_timeout(timeout_header: float) -> type[H11Protocol]:
    class HeaderDeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(timeout_header, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                logger.info("closed a connection whose request headers took over %.0f s",
                            timeout_header)
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm()  # a request has begun (or not) but its headers are incomplete
            else:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # idle now: uvicorn's keep-alive timeout takes over

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol
