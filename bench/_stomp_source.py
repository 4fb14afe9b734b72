"""A STOMP-over-WebSocket frame source that outruns any one client: the engines bench's server.

    python -m bench._stomp_source --port 0 --run bench      # prints "PORT <n>", then serves

One asyncio (uvloop) process. A connection is upgraded (``v12.stomp``),
CONNECT gets CONNECTED (heart-beat 0,0: nothing but data on the wire), and a
SUBSCRIBE gets its RECEIPT; to ``/topic/stream`` the source then writes MESSAGE
frames as fast as the socket takes them (paused by the transport's flow
control, 64 frames per write, one WebSocket frame per STOMP frame as the gateway
sends them), each a fresh trace envelope of device ``src-<connection>`` with the
next ``seq`` and the gateway hop stamped, so the client's ledger does its whole
work. Any other destination stays idle (for the idle-connection figures).
DISCONNECT gets its RECEIPT and the close.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time

from telemetry import envelope
from users._stomp_codec import encode
from users._ws_codec import OP_CLOSE, OP_TEXT, accept_key

__all__ = ["main"]

BATCH = 64


def ws_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """An unmasked server frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 1 << 16:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def read_client_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Masked client frames off the front of ``buf`` (whole ones only)."""
    out = []
    while len(buf) >= 6:
        length = buf[1] & 0x7F
        start = 2
        if length == 126:
            length = int.from_bytes(buf[2:4], "big")
            start = 4
        elif length == 127:
            length = int.from_bytes(buf[2:10], "big")
            start = 10
        end = start + 4 + length
        if len(buf) < end:
            break
        key = bytes(buf[start : start + 4])
        data = bytes(buf[start + 4 : end])
        mask = (key * (length // 4 + 1))[:length]
        payload = (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(
            length, "big"
        )
        out.append((buf[0] & 0x0F, payload))
        del buf[:end]
    return out


class Source(asyncio.Protocol):
    counter = itertools.count(1)

    def __init__(self, run: str) -> None:
        self.run = run
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.streaming = False
        self.sub_id = "1"
        self.device = f"src-{next(self.counter):05d}"
        self.seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            key = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-key":
                    key = value.strip()
            assert self.transport is not None
            self.transport.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n"
                    "Sec-WebSocket-Protocol: v12.stomp\r\n\r\n"
                ).encode()
            )
            self.upgraded = True
        for opcode, payload in read_client_frames(self.buf):
            if opcode == OP_CLOSE:
                self._send(ws_frame(payload[:2], OP_CLOSE))
                self._close()
                return
            self._stomp(payload)

    def _stomp(self, payload: bytes) -> None:
        text = payload.decode()
        command, _, rest = text.partition("\n")
        headers = dict(
            line.split(":", 1) for line in rest.split("\n\n", 1)[0].split("\n") if ":" in line
        )
        if command == "CONNECT":
            self._send(ws_frame(encode("CONNECTED", {"version": "1.2", "heart-beat": "0,0"})))
        elif command == "SUBSCRIBE":
            self.sub_id = headers.get("id", "1")
            self._send(ws_frame(encode("RECEIPT", {"receipt-id": headers.get("receipt", "")})))
            if headers.get("destination") == "/topic/stream":
                self.streaming = True
                self._pump()
        elif command == "DISCONNECT":
            self.streaming = False
            self._send(ws_frame(encode("RECEIPT", {"receipt-id": headers.get("receipt", "")})))
            self._send(ws_frame((1000).to_bytes(2, "big"), OP_CLOSE))
            self._close()

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        self.streaming = False
        if self.transport is not None:
            self.transport.close()

    def _pump(self) -> None:
        if not self.streaming or self.paused or self.transport is None:
            return
        head = f"MESSAGE\ndestination:/topic/stream\nsubscription:{self.sub_id}\n"
        frames = []
        for _ in range(BATCH):
            self.seq += 1
            now = time.time_ns()
            body = envelope.build(self.device, 1.5, 2.5, run=self.run, seq=self.seq, t0=now, tp=now)
            body = body[:-3] + b'"gateway":' + str(now).encode() + b"}}}"  # hops: {} -> stamped
            stomp = (
                (
                    f"{head}content-type:application/json\nmessage-id:{self.seq}\n"
                    f"stream-id:{now // 1_000_000}-{self.seq}\ncontent-length:{len(body)}\n\n"
                ).encode()
                + body
                + b"\x00"
            )
            frames.append(ws_frame(stomp))
        self.transport.write(b"".join(frames))
        asyncio.get_running_loop().call_soon(self._pump)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        self.streaming = False
        self.transport = None


async def serve(port: int, run: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Source(run), "127.0.0.1", port, backlog=4096)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench._stomp_source")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--run", default="bench")
    p.add_argument("--seconds", type=float, default=600, help="exit after this long (a bound)")
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio is slower, still far faster than one client
        pass

    async def bounded() -> None:
        try:
            await asyncio.wait_for(serve(args.port, args.run), args.seconds)
        except TimeoutError:
            pass

    asyncio.run(bounded())
    sys.stdout.flush()


if __name__ == "__main__":
    main()
