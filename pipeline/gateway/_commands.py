"""REST → MQTT: publish a device command at QoS 1 and wait for the broker's PUBACK.

paho runs its network loop in its own thread (``loop_start``) and reconnects by
itself; the event loop only calls ``publish()`` (non-blocking: paho hands the
packet to its thread) and awaits a future that ``on_publish`` resolves. paho calls
``on_publish`` while holding its own message lock, so this module never calls
paho while holding ``_lock`` (that order would deadlock), and a PUBACK that beats
the registration of its future is parked in ``_early``. paho never reuses a mid
while that message awaits its PUBACK, so a mid is unambiguous until acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from pipeline._mqtt import make_client
from pipeline.config import COMMAND_TOPIC, MqttTarget
from pipeline.exceptions import CommandNotConfirmed, CommandUnavailable

log = logging.getLogger("pipeline.gateway")


@dataclass(frozen=True)
class IssuedCommand:
    device_id: str
    command: str
    command_id: str
    topic: str
    issued_at: int


class CommandPublisher:
    def __init__(self, target: MqttTarget, ack_timeout_s: float = 5.0) -> None:
        self.target = target
        self.ack_timeout_s = ack_timeout_s
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._early: dict[int, Any] = {}
        self._expired: set[int] = set()
        self._was_connected = False
        self.client = make_client(target, client_id=f"pipeswarm-gateway-{uuid.uuid4().hex[:12]}")
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def start(self) -> None:
        self.client.connect_async(self.target.host, self.target.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self._was_connected = False  # a deliberate disconnect is not worth a warning
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    async def publish(self, device_id: str, command: str) -> IssuedCommand:
        """Publish ``orin/{device_id}/command``; return once the broker has it (PUBACK)."""
        if not self.connected:
            raise CommandUnavailable(f"MQTT broker {self.target.host}:{self.target.port} down")
        issued = IssuedCommand(
            device_id=device_id,
            command=command,
            command_id=uuid.uuid4().hex,
            topic=COMMAND_TOPIC.format(device_id=device_id),
            issued_at=time.time_ns(),
        )
        payload = json.dumps(
            {
                "device_id": device_id,
                "command": command,
                "command_id": issued.command_id,
                "issued_at": issued.issued_at,
            }
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        info = self.client.publish(issued.topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # paho keeps a QoS 1 message queued and sends it after reconnecting.
            raise CommandNotConfirmed(f"publish returned {mqtt.error_string(info.rc)}")
        with self._lock:
            if info.mid in self._early:
                future.set_result(self._early.pop(info.mid))
            else:
                self._pending[info.mid] = (loop, future)
        try:
            reason = await asyncio.wait_for(future, self.ack_timeout_s)
        except TimeoutError:
            with self._lock:
                if self._pending.pop(info.mid, None) is not None:
                    self._expired.add(info.mid)  # its late PUBACK must not look early
            raise CommandNotConfirmed(
                f"no PUBACK within {self.ack_timeout_s:.0f} s (paho retries it)"
            ) from None
        if getattr(reason, "is_failure", False):
            raise CommandNotConfirmed(f"broker refused the publish: {reason}")
        return issued

    # -- paho thread ------------------------------------------------------------
    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        with self._lock:
            waiter = self._pending.pop(mid, None)
            if waiter is None:
                if mid in self._expired:
                    self._expired.discard(mid)
                else:
                    self._early[mid] = reason
                return
        loop, future = waiter
        loop.call_soon_threadsafe(_resolve, future, reason)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("event=mqtt_connect_failed reason=%s", reason)
            return
        self._was_connected = True
        log.info("event=mqtt_connected host=%s port=%d", self.target.host, self.target.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._was_connected:
            self._was_connected = False
            log.warning("event=mqtt_disconnected reason=%s (paho reconnects)", reason)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
