"""``MqttDevice``: one Locust user = one IoT device publishing coordinates over MQTT.

Like the original Jetson devices, each device publishes ``{"device_id","x","y",
"timestamp"}`` (plus the trace envelope, ``telemetry.envelope``) on
``sensors/{device_id}/coordinates`` every ``--device-interval`` seconds, and
listens for commands on ``orin/{device_id}/command``::

    from users import MqttDevice

    class Device(MqttDevice):
        pass                      # everything from the options; or set attributes:

    class FastDevice(MqttDevice):
        interval = 0.01           # 100 msg/s per device
        qos = 0
        url = "mqtts://dev:secret@broker:8883?ca=/etc/ca.pem"

Publishing follows an **open-model schedule** (``users._mqtt_schedule``): the
k-th message is due at ``start + k * interval`` whatever happened before; that
intended time is the envelope's ``t0``, the real send time its ``tp``, and the
lag ``tp - t0`` goes into the ledger's schedule-lag histogram
(``Ledger.published``). A device that cannot send (disconnected, in-flight
window full) keeps its timetable and catches up later, so an outage shows up as
lag and end-to-end latency, not as a quiet gap.

Locust entries (``request_type="MQTT"``; the connection ones are listed in
``users._mqtt_client``):

- ``publish:1:sensors/+/coordinates`` / ``publish:2:…`` — timed from PUBLISH to
  PUBACK / PUBCOMP, fired from the acknowledgement.
- ``publish:0:sensors/+/coordinates`` — counted with ``response_time=None``.
  QoS 0 has no acknowledgement, and timing the write into a local socket buffer
  would be a made-up latency; ``None`` is Locust's own "no response time": the
  row shows requests and RPS, no percentiles. Its real latency is end to end, in
  the ledger (End to end tab, ``e2e.json``), measured where the message arrives.
- ``command:orin/+/command`` — command receipt latency, ``now - issued_at`` (the
  epoch ns the gateway stamps into every command; clamped at 0 if clocks of two
  hosts disagree). A command without ``issued_at`` is counted with ``None``; one
  that is not a JSON object is a failure (:class:`CommandError`).
- ``subscribe:1:orin/+/command`` — SUBSCRIBE to SUBACK.

Engine: a hand-written MQTT 3.1.1/5 client on raw non-blocking sockets with
TCP_NODELAY, driven by one pump greenlet per process from gevent's hub
watchers, and one timetable greenlet per process for all devices. Why, with
figures: ``bench/README.md``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import ssl
import time
from collections.abc import Sequence
from typing import Any

from locust import User, constant, task
from locust.env import Environment

import telemetry
from telemetry import clock, envelope
from users import _mqtt_auth
from users._config import (
    MQTT_VERSIONS,
    MqttUrl,
    Settings,
    parse_mqtt_url,
    settings,
    stack_secret_file,
)
from users._devices import DeviceIds
from users._mqtt_client import REQUEST_TYPE, ClientConfig, DeviceClient
from users._mqtt_codec import Will
from users._mqtt_payload import Template, Trajectory, load_template
from users._mqtt_schedule import get_schedule
from users._per_env import PerEnvironment
from users.exceptions import (
    CommandError,
    ConfigError,
    ConnectFailed,
    ConnectionLost,
    MqttError,
    PublishRefused,
    SubscribeRefused,
)

__all__ = [
    "MqttDevice",
    "DeviceClient",
    "ClientConfig",
    "Will",
    "REQUEST_TYPE",
    "MqttError",
    "ConnectFailed",
    "ConnectionLost",
    "PublishRefused",
    "SubscribeRefused",
    "CommandError",
]

#: the ClientConfig of each (device class, settings), per Environment: built once, shared
#: by the class's devices
_configs: PerEnvironment[dict[tuple[Any, ...], ClientConfig]] = PerEnvironment(dict)
#: ... and the per-device credentials that go with it (None: the config's, or none)
_credentials: PerEnvironment[dict[tuple[Any, ...], _mqtt_auth.Credentials | None]] = PerEnvironment(
    dict
)


def _topic_template(topic: str) -> str:
    """``sensors/{device_id}/coordinates`` -> ``sensors/+/coordinates`` (a stats name)."""
    return topic.replace("{device_id}", "+")


class MqttDevice(DeviceIds, User):
    """One device: its own MQTT connection, client id, topics and timetable.

    Every ``None`` attribute takes its value from the matching option
    (``users._config``); set it on a subclass to fix it in code.
    """

    abstract = True

    # --- connection ----------------------------------------------------------
    #: ``mqtt://[user:pw@]host:port`` or ``mqtts://``; None = ``--mqtt-url``. Without
    #: ``user:pw`` each device logs in as its id with its own password
    #: (``--mqtt-credentials``, ``--mqtt-secret-file`` or the stack's: ``users._mqtt_auth``).
    url: str | None = None
    #: ``"3.1.1"`` or ``"5"``; None = ``--mqtt-version``.
    mqtt_version: str | None = None
    #: Seconds; 0 = off. None = ``--mqtt-keepalive``.
    keepalive: int | None = None
    #: TLS settings for ``mqtts://`` (default: system CAs, or the URL's ``ca=``).
    tls_context: ssl.SSLContext | None = None
    #: False = persistent session: the broker keeps subscriptions and queued
    #: commands while the device is away, and unacknowledged publishes are resent.
    clean_session: bool = True
    #: MQTT 5 only: how long (s) the broker keeps a persistent session.
    session_expiry: int = 3600
    #: Last will; ``{device_id}`` in its topic is filled in. None = no will.
    will: Will | None = None
    #: Local addresses to connect from, spread over devices (e.g.
    #: ``["127.0.0.2", "127.0.0.3"]``): each gives ~28k more ports to one broker.
    source_addresses: Sequence[str] = ()
    #: QoS 1/2 publishes in flight per device (MQTT 5: capped by the broker's
    #: Receive Maximum); a full window delays the timetable (shows as lag).
    max_inflight: int = 20
    connect_timeout: float = 10.0
    #: Reconnect backoff: doubles from ``reconnect_min`` up to ``reconnect_max`` (s), jittered.
    reconnect_min: float = 0.2
    reconnect_max: float = 10.0
    #: The engine; a subclass of :class:`DeviceClient` may replace it.
    client_cls: type[DeviceClient] = DeviceClient

    # --- device behaviour ---------------------------------------------------------
    #: Seconds between publishes; 0 = only listen for commands. None = ``--device-interval``.
    interval: float | None = None
    #: 0, 1 or 2; None = ``--mqtt-qos``.
    qos: int | None = None
    #: Path of a JSON payload template; "" = the original coordinates. None = ``--payload-template``.
    payload_template: str | None = None
    command_qos: int = 1
    publish_topic: str = "sensors/{device_id}/coordinates"
    command_topic: str = "orin/{device_id}/command"
    numbering = "mqtt"
    #: Most messages one device sends in one go when catching up (one write).
    max_batch: int = 32
    #: Seconds ``on_stop`` waits for outstanding PUBACK/PUBCOMP before DISCONNECT.
    drain_timeout: float = 2.0

    # The timetable publishes, so the user's own task loop has nothing to do; it
    # wakes rarely: 19,000 devices waking every minute would cost more idle CPU
    # than all their keepalives.
    wait_time = constant(3600)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        s = settings(environment)
        n = self.next_device_number()
        self.device_id: str = self.make_device_id(n)
        self.qos_level: int = s.mqtt_qos if self.qos is None else int(self.qos)
        if self.qos_level not in (0, 1, 2):
            raise ConfigError(f"{type(self).__name__}.qos {self.qos!r}: must be 0, 1 or 2.")
        interval = s.device_interval if self.interval is None else float(self.interval)
        self.interval_ns: int = int(interval * 1e9)
        self.topic: str = self.publish_topic.format(device_id=self.device_id)
        self.command_topic_name: str = self.command_topic.format(device_id=self.device_id)
        self.publish_name = f"publish:{self.qos_level}:{_topic_template(self.publish_topic)}"
        self.command_name = f"command:{_topic_template(self.command_topic)}"
        template_path = (
            s.payload_template if self.payload_template is None else self.payload_template
        )
        self.template: Template | None = load_template(template_path) if template_path else None
        self.trajectory = Trajectory(t_start=time.time())
        self.seq = 0
        self.commands = 0
        self._due = 0
        self._sched_token = 0
        self._publishing = False
        self._started = False
        self._ledger: telemetry.Ledger | None = None
        self._run_id = ""
        will = self.will
        if will is not None:
            will = Will(
                will.topic.format(device_id=self.device_id), will.payload, will.qos, will.retain
            )
        sources = self.source_addresses
        cfg = self._client_config(s)
        credentials = _credentials(environment).get((type(self), s))
        if credentials is not None:
            username, password = credentials(self.device_id)
            cfg = dataclasses.replace(cfg, username=username, password=password)
        self.client: DeviceClient = self.client_cls(
            environment,
            cfg,
            self.device_id,
            will=will,
            source_address=sources[n % len(sources)] if sources else None,
            owner=self,
        )

    # --- overridable hooks -------------------------------------------------------
    def payload(self, seq: int, t0: int, tp: int) -> bytes:
        """The message body of publish ``seq``: template or coordinates, plus the envelope."""
        x, y = self.trajectory.at(t0 / 1e9)
        if self.template is None:
            return envelope.build(self.device_id, x, y, run=self._run_id, seq=seq, t0=t0, tp=tp)
        fields = self.template.render(self.device_id, x, y, tp / 1e9, seq)
        return envelope.wrap(fields, run=self._run_id, seq=seq, t0=t0, tp=tp)

    def on_command(self, command: dict[str, Any]) -> None:
        """Called for every command received (after its latency was reported)."""

    # --- Locust lifecycle -----------------------------------------------------------
    def on_start(self) -> None:
        self._ledger = telemetry.get_ledger(self.environment)
        self._run_id = self._ledger.run_id
        self._publishing = self.interval_ns > 0
        self.client.subscribe(
            self.command_topic_name,
            self.command_qos,
            name=f"subscribe:{self.command_qos}:{_topic_template(self.command_topic)}",
        )
        self.client.connect()

    def on_stop(self) -> None:
        self._publishing = False
        get_schedule(self.environment).remove(self)
        if self.client.inflight and self.client.connected:
            self.client.wait_drained(self.drain_timeout)
        self.client.close(wait=1.0)

    @task
    def listen(self) -> None:
        """Nothing to do: the process timetable publishes, the pump receives."""

    # --- the timetable (users._mqtt_schedule) ------------------------------------------
    def publish_due(self, due: int, now: int) -> int:
        """Publish what is due at ``due`` (and any backlog, up to ``max_batch``).

        Returns the next due time, or 0 when the device cannot go on now (it is
        put back by :meth:`mqtt_window` / :meth:`mqtt_connected`).
        """
        ledger = self._ledger
        if ledger is None or ledger.draining or not self._publishing:
            self._publishing = False
            return 0
        client = self.client
        qos = self.qos_level
        interval = self.interval_ns
        topic = self.topic
        name = self.publish_name
        device_id = self.device_id
        sent = 0
        while client.can_publish(qos):
            seq = self.seq + 1
            tp = time.time_ns()
            if not client.publish(topic, self.payload(seq, due, tp), qos, name=name, flush=False):
                break
            self.seq = seq
            ledger.published(device_id, seq, due, tp)
            due += interval
            sent += 1
            if due > tp or sent >= self.max_batch:
                client.flush()
                self._due = due
                return due
        client.flush()
        self._due = due
        return 0

    # --- client callbacks (pump greenlet) ---------------------------------------------------
    def mqtt_connected(self, session_present: bool) -> None:
        if not self._publishing:
            return
        if not self._started:
            self._started = True
            # a random phase spreads a fleet over the interval, as real devices are
            self._due = time.time_ns() + int(random.random() * self.interval_ns)
        get_schedule(self.environment).add(self, self._due)

    def mqtt_disconnected(self, reason: str) -> None:
        get_schedule(self.environment).remove(self)

    def mqtt_window(self) -> None:
        if self._publishing and self._started:
            get_schedule(self.environment).add(self, self._due)

    def mqtt_message(self, topic: str, payload: bytes, recv_ns: int) -> None:
        if topic != self.command_topic_name:
            return
        self.commands += 1
        try:
            command = json.loads(payload)
        except ValueError:
            command = None
        context: dict[str, Any] = {"device_id": self.device_id}
        if not isinstance(command, dict):
            self._fire_command(
                None, len(payload), context, CommandError("the command is not a JSON object")
            )
            return
        issued = command.get("issued_at")  # the gateway's clock; ours converted to the master's
        ms = (
            max(0.0, (clock.to_master(recv_ns) - issued) / 1e6)
            if type(issued) is int and issued > 0
            else None
        )
        context["command_id"] = command.get("command_id")
        context["command"] = command.get("command")
        self._fire_command(ms, len(payload), context, None)
        self.on_command(command)

    def _fire_command(
        self, ms: float | None, length: int, context: dict[str, Any], exc: Exception | None
    ) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=self.command_name,
            response_time=ms,
            response_length=length,
            exception=exc,
            context=context,
        )

    # --- configuration ----------------------------------------------------------------------
    def _client_config(self, s: Settings) -> ClientConfig:
        """One :class:`ClientConfig` per device class and settings, shared by its devices."""
        cls = type(self)
        key = (cls, s)
        configs = _configs(self.environment)
        cfg = configs.get(key)
        if cfg is not None:
            return cfg
        url = parse_mqtt_url(self.url, f"{cls.__name__}.url") if self.url else s.mqtt
        version_text = self.mqtt_version
        if version_text is None:
            version = s.mqtt_version
        elif str(version_text) in MQTT_VERSIONS:
            version = MQTT_VERSIONS[str(version_text)]
        else:
            raise ConfigError(
                f"{cls.__name__}.mqtt_version {version_text!r}: must be '3.1.1' or '5'."
            )
        tls = None
        if url.tls:
            tls = self.tls_context or ssl.create_default_context(cafile=url.ca_file)
            if url.insecure:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        cfg = ClientConfig(
            host=url.host,
            port=url.port,
            version=version,
            username=url.username,
            password=url.password,
            tls=tls,
            keepalive=s.mqtt_keepalive if self.keepalive is None else int(self.keepalive),
            clean=self.clean_session,
            session_expiry=self.session_expiry,
            max_inflight=self.max_inflight,
            connect_timeout=self.connect_timeout,
            reconnect_min=self.reconnect_min,
            reconnect_max=self.reconnect_max,
        )
        configs[key] = cfg
        _credentials(self.environment)[key] = _device_credentials(s, url)
        return cfg


def _device_credentials(s: Settings, url: MqttUrl) -> _mqtt_auth.Credentials | None:
    """Per-device login (``users._mqtt_auth``), unless the URL names one user for all."""
    if url.username is not None:
        return None
    if s.mqtt_credentials:
        return _mqtt_auth.from_file(s.mqtt_credentials)
    secret_file = s.mqtt_secret_file or stack_secret_file(url)
    return _mqtt_auth.from_secret(secret_file) if secret_file else None
