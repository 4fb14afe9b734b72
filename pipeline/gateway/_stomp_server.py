"""One STOMP session over one WebSocket: CONNECT, SUBSCRIBE, RECEIPT, ERROR, heart-beats.

The session is transport-free: the endpoint feeds it the bytes of each WebSocket
message and it answers by queueing frames on the connection's :class:`Outbox`.
Spec: https://stomp.github.io/stomp-specification-1.2.html. The gateway is a
read-only broker: SEND and transactions get an ERROR (commands go over REST).

Every MESSAGE carries ``stream-id:<id>``, the id of its entry in the Redis update
stream. A client that reconnects subscribes with ``since:<the last stream-id it
saw>`` and first gets what it missed, replayed in order (``pipeline.gateway._replay``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.exceptions import StompProtocolError
from pipeline.gateway._guard import Authenticator, bearer
from pipeline.gateway._hub import TOPIC_ALL, TOPIC_DEVICE_PREFIX, Hub, Outbox, Subscription
from pipeline.gateway._metrics import GatewayStats
from pipeline.gateway._stream import parse_id
from pipeline.gateway.stomp import Frame, FrameParser, encode_frame, escape

if TYPE_CHECKING:
    from pipeline.gateway._replay import Replayer

#: WebSocket subprotocols in order of preference (what stomp.js offers).
SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")
VERSIONS = ("1.2", "1.1", "1.0")
#: What the server offers in CONNECTED: it can send every 10 s, wants one every 10 s.
SERVER_HEARTBEAT_MS = (10_000, 10_000)
#: Spec, "Heart-beating": allow for timing inaccuracy before calling a peer dead.
RECEIVE_GRACE = 2.0
SERVER_NAME = "pipeswarm-gateway/0.1"
#: per connection, unless the gateway says otherwise (GATEWAY_MAX_SUBSCRIPTIONS): every
#: subscription to /topic/coordinates costs the fan-out a frame per update
MAX_SUBSCRIPTIONS = 100

_DEVICE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_HEARTBEAT = re.compile(r"(\d{1,9}),(\d{1,9})")


class StompSession:
    def __init__(
        self,
        hub: Hub,
        outbox: Outbox,
        stats: GatewayStats,
        auth: Authenticator | None = None,
        http_headers: Mapping[str, str] | None = None,
        replayer: Replayer | None = None,
        *,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        max_body_bytes: int = 64 * 1024,
        query_token: str = "",
    ) -> None:
        self.hub = hub
        self.replayer = replayer
        self.replays: dict[str, asyncio.Task[None]] = {}
        self.outbox = outbox
        self.stats = stats
        #: None: no authentication (a session built without a gateway, in tests)
        self.auth = auth
        #: a token given with the upgrade request (header or ``?token=``), used when
        #: CONNECT carries none
        self.upgrade_token = bearer((http_headers or {}).get("authorization")) or query_token
        self.max_subscriptions = max_subscriptions
        self.parser = FrameParser(max_body_bytes=max_body_bytes)
        self.version = "1.2"
        self.connected = False
        self.closing = False
        self.subscriptions: dict[str, Subscription] = {}
        #: seconds without any byte from the client before the session ends (0 = never)
        self.receive_timeout_s = 0.0

    # -- input ------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Handle one WebSocket message (any number of frames or heart-beats)."""
        try:
            frames = self.parser.feed(data)
        except StompProtocolError as exc:
            self.error(exc.reason, "malformed frame", str(exc))
            return
        for frame in frames:
            self._handle(frame)
            if self.closing:
                return

    def heartbeat_missed(self) -> None:
        self.error(
            "heartbeat_timeout",
            "heart-beat timeout",
            f"nothing received for {self.receive_timeout_s:.1f} s",
        )

    def connect_timed_out(self, after_s: float) -> None:
        self.stats.rejected["connect_timeout"] += 1
        self.error("connect_timeout", "no CONNECT", f"send CONNECT within {after_s:g} s")

    def release(self) -> None:
        """Drop every subscription (the connection is ending)."""
        for task in self.replays.values():
            task.cancel()
        self.replays.clear()
        for sub in self.subscriptions.values():
            self.hub.unsubscribe(sub)
        self.subscriptions.clear()

    # -- frames -----------------------------------------------------------------
    def _handle(self, frame: Frame) -> None:
        command = frame.command
        if not self.connected:
            if command in ("CONNECT", "STOMP"):
                self._connect(frame)
            else:
                self.error("not_connected", "not connected", "send CONNECT first", frame)
            return
        if command == "SUBSCRIBE":
            ok = self._subscribe(frame)
        elif command == "UNSUBSCRIBE":
            ok = self._unsubscribe(frame)
        elif command == "DISCONNECT":
            self._receipt(frame)
            self._close()
            return
        elif command in ("ACK", "NACK"):
            ok = True  # every subscription is ack:auto in effect; nothing to settle
        elif command in ("CONNECT", "STOMP"):
            self.error("already_connected", "already connected", "one CONNECT per session", frame)
            return
        elif command in ("SEND", "BEGIN", "COMMIT", "ABORT"):
            detail = f"{command} is not supported: the gateway only publishes; send commands "
            detail += "with POST /api/commands/{device_id}"
            self.error("unsupported", f"{command} not supported", detail, frame)
            return
        else:  # a server command sent by a client
            self.error("unexpected_command", f"unexpected {command}", "client frames only", frame)
            return
        if ok:
            self._receipt(frame)

    def _connect(self, frame: Frame) -> None:
        headers = frame.headers
        offered = headers.get("accept-version", "1.0").replace(" ", "").split(",")
        version = next((v for v in VERSIONS if v in offered), None)
        if version is None:
            self.error(
                "version",
                "unsupported STOMP version",
                f"supported versions are {','.join(reversed(VERSIONS))}",
                frame,
                extra={"version": ",".join(reversed(VERSIONS))},
            )
            return
        self.version = version
        self.parser.escaped = version != "1.0"
        if self.auth is not None:
            why = self.auth.refuse(self._token(headers), "stomp")
            if why is not None:
                self.error("auth", "authentication failed", why, frame)
                return
        match = _HEARTBEAT.fullmatch(headers.get("heart-beat", "0,0").replace(" ", ""))
        if match is None:
            self.error("bad_header", "bad heart-beat header", "expected heart-beat:cx,cy", frame)
            return
        cx, cy = int(match[1]), int(match[2])
        sx, sy = SERVER_HEARTBEAT_MS
        # Spec, "Heart-beating": each direction runs at the slower of what one side
        # can do and the other wants, and not at all if either says 0.
        send_ms = max(sx, cy) if sx and cy else 0
        receive_ms = max(cx, sy) if cx and sy else 0
        self.outbox.heartbeat_s = send_ms / 1000
        self.receive_timeout_s = receive_ms / 1000 * RECEIVE_GRACE
        self.connected = True
        self._send(
            "CONNECTED",
            {
                "version": version,
                "heart-beat": f"{sx},{sy}",
                "server": SERVER_NAME,
                "session": uuid.uuid4().hex,
            },
        )

    def _token(self, headers: Mapping[str, str]) -> str:
        """The bearer token of a CONNECT: ``passcode`` (stomp.js), an ``Authorization``
        header in the frame (the Go STOMP tool), else the upgrade request's."""
        return (
            headers.get("passcode")
            or bearer(headers.get("Authorization") or headers.get("authorization"))
            or self.upgrade_token
        )

    def _subscribe(self, frame: Frame) -> bool:
        sub_id = frame.headers.get("id")
        destination = frame.headers.get("destination")
        if not sub_id or not destination:
            self.error("missing_header", "SUBSCRIBE needs id and destination", "", frame)
            return False
        if len(self.subscriptions) >= self.max_subscriptions:
            self.stats.rejected["too_many_subscriptions"] += 1
            detail = f"at most {self.max_subscriptions} subscriptions per connection"
            self.error("too_many_subscriptions", "too many subscriptions", detail, frame)
            return False
        if sub_id in self.subscriptions:
            self.error("duplicate_subscription", f"subscription id {sub_id} in use", "", frame)
            return False
        if destination == TOPIC_ALL:
            device_id = None
        elif destination.startswith(TOPIC_DEVICE_PREFIX) and _DEVICE_ID.fullmatch(
            destination[len(TOPIC_DEVICE_PREFIX) :]
        ):
            device_id = destination[len(TOPIC_DEVICE_PREFIX) :]
        else:
            detail = f"known destinations: {TOPIC_ALL}, {TOPIC_DEVICE_PREFIX}{{device_id}}"
            self.error("unknown_destination", f"unknown destination {destination}", detail, frame)
            return False
        since_raw = frame.headers.get("since")
        since = None if since_raw is None else parse_id(since_raw)
        if since_raw is not None and since is None:
            detail = "since must be a stream id such as 1700000000000-0 (a MESSAGE's stream-id)"
            self.error("bad_since", "bad since header", detail, frame)
            return False
        sub = Subscription(
            self.outbox, sub_id, destination, device_id, self._message_head(destination, sub_id)
        )
        self.subscriptions[sub_id] = sub
        if since is None or self.hub.snapshot_mode or self.replayer is None:
            # snapshot mode: the next batch holds every latest value; nothing to replay
            self.hub.subscribe(sub)
            return True
        self.replays[sub_id] = self.replayer.start(
            sub, device_id, since, lambda: self._replay_failed(sub_id)
        )
        return True

    def _replay_failed(self, sub_id: str) -> None:
        self.replays.pop(sub_id, None)
        detail = "Redis did not answer; subscribe again with the same since to resume"
        self.error("replay_failed", "replay failed", detail)

    def _message_head(self, destination: str, sub_id: str) -> str:
        esc = escape if self.parser.escaped else str
        return (
            f"MESSAGE\ndestination:{esc(destination)}\nsubscription:{esc(sub_id)}\n"
            f"content-type:application/json\nmessage-id:{esc(sub_id)}-"
        )

    def _unsubscribe(self, frame: Frame) -> bool:
        sub_id = frame.headers.get("id")
        if not sub_id:
            self.error("missing_header", "UNSUBSCRIBE needs id", "", frame)
            return False
        sub = self.subscriptions.pop(sub_id, None)
        task = self.replays.pop(sub_id, None)
        if task is not None:
            task.cancel()
        if sub is not None:
            self.hub.unsubscribe(sub)
        return True

    # -- output -----------------------------------------------------------------
    def _send(self, command: str, headers: dict[str, str], body: str = "") -> None:
        frame = encode_frame(command, headers, body, escaped=self.parser.escaped)
        self.outbox.push_control(frame.decode())

    def _receipt(self, frame: Frame) -> None:
        receipt = frame.headers.get("receipt")
        if receipt is not None:
            self._send("RECEIPT", {"receipt-id": receipt})

    def error(
        self,
        reason: str,
        message: str,
        detail: str,
        frame: Frame | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Send ERROR, count it by ``reason``, and close after it is written (spec)."""
        if self.closing:
            return
        self.stats.stomp_errors[reason] += 1
        headers = {"message": message, **(extra or {})}
        if frame is not None and "receipt" in frame.headers:
            headers["receipt-id"] = frame.headers["receipt"]
        if detail:
            headers["content-type"] = "text/plain"
        self._send("ERROR", headers, detail)
        self._close()

    def _close(self) -> None:
        self.closing = True
        self.release()
        self.outbox.close_after_drain()
