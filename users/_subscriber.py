"""The reconnect loop of the push subscribers (``StompSubscriber``, ``WsSubscriber``), once.

A subscriber's one task supervises its connection: it waits while the
connection is up; when it ends (without us closing it) it reports a
``connection lost`` event, waits a jittered backoff (``users._backoff``) and
opens a new session (connect, and for STOMP subscribe), each step reported as
its own request. Frames arrive in a reader greenlet meanwhile.

Resume: the gateway puts a stream id on every pushed frame (the id of the
update in its Redis Stream). The subscriber remembers the last one it read and
hands it to the next session, which asks the gateway to replay what came after
it (STOMP: a ``since`` header on SUBSCRIBE; raw WebSocket: ``?since=`` on the
URL). The first session asks for nothing. What the gateway replays arrives in
order, after the outage: the ledger subscription, which lives across
reconnects, counts it as delivered, and as ``late`` where it arrived more than
the grace window after it was due (``telemetry.ledger.Subscriber.reconnected``),
so a resumed outage shows as late messages and latency, not as loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gevent
from locust import User, constant, task

import telemetry
from users._backoff import Backoff
from users._ws_common import fire

if TYPE_CHECKING:
    from gevent.event import Event
    from locust.env import Environment

__all__ = ["PushSubscriber"]


class PushSubscriber(User):
    """Base of the push subscribers: the reconnect loop, the ledger subscription, resume."""

    abstract = True

    #: Reconnect backoff: doubles from ``reconnect_min`` up to ``reconnect_max`` (s), jittered.
    reconnect_min: float = 0.2
    reconnect_max: float = 10.0
    #: Ask the gateway to replay what a reconnect missed (from the last stream id seen).
    resume: bool = True

    #: Locust request type of the subscriber's entries (``STOMP``, ``WS``).
    request_type: str = ""
    #: The ledger's subscriber kind (``stomp``, ``ws``): paths ``mqtt→{kind}``.
    ledger_kind: str = ""
    #: The entry protocols (envelope ``src``) it can receive; None: all (through the pipeline).
    ledger_srcs: tuple[str, ...] | None = None

    # The task only supervises the connection; frames arrive in a reader greenlet.
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.backoff = Backoff(self.reconnect_min, self.reconnect_max)
        self.sub: telemetry.Subscriber | None = None
        #: the stream id of the last frame read (None: none read yet)
        self.last_stream_id: str | None = None
        #: sessions opened so far (the first one resumes nothing)
        self.sessions = 0
        self._ledger: telemetry.Ledger | None = None
        self._stopping = False

    # --- what a protocol provides -------------------------------------------------------------
    def has_session(self) -> bool:
        """A session was opened and not closed by us (it may have been lost since)."""
        raise NotImplementedError

    def lost_event(self) -> Event:
        """Set when the current session ends."""
        raise NotImplementedError

    def lost_error(self) -> Exception:
        """The exception of the ``connection lost`` event (why it ended)."""
        raise NotImplementedError

    def open_session(self, since: str | None) -> bool:
        """Connect (and subscribe), each step reported; ``since``: the stream id to resume after."""
        raise NotImplementedError

    def close_session(self) -> None:
        """End the current session (ours, or what is left of a lost one)."""
        raise NotImplementedError

    # --- Locust lifecycle -----------------------------------------------------------------------
    def on_start(self) -> None:
        self._ledger = telemetry.get_ledger(self.environment)
        self._session()

    def on_stop(self) -> None:
        self._stopping = True
        self.close_session()
        if self.sub is not None:
            self.sub.close()

    @task
    def keep_connected(self) -> None:
        """Wait while the session is up; when it ends, report it, back off and reconnect."""
        if self.has_session():
            self.lost_event().wait()
            if self._stopping:
                return
            fire(self.environment, self.request_type, "connection lost", None, self.lost_error())
            self.close_session()
        self.wait_backoff()
        self._session()

    def wait_backoff(self) -> None:
        """Sleep before the next reconnect attempt (cooperatively)."""
        gevent.sleep(self.backoff.next())

    # --- sessions -------------------------------------------------------------------------------
    def _session(self) -> bool:
        since = self.resume_point() if self.resume else None
        self.sessions += 1
        if not self.open_session(since):
            return False
        self.backoff.reset()
        return True

    def subscribed(self) -> None:
        """The session is receiving (call it in the reader, before the first frame is handled).

        The ledger subscription starts with the first session; it lives across
        reconnects, so what a reconnect missed (and was not replayed) is this
        subscriber's loss, and what was replayed after it is late.
        """
        if self._ledger is None:
            return
        if self.sub is None:
            devices = self.watched_devices()
            self.sub = self._ledger.subscriber(self.ledger_kind, devices, self.ledger_srcs)
        elif self.sessions > 1:
            self.sub.reconnected()

    def resume_point(self) -> str | None:
        """The stream id the next session resumes after (the last one read)."""
        return self.last_stream_id

    def watched_devices(self) -> list[str] | None:
        """The devices this subscriber expects (None: all)."""
        return None
