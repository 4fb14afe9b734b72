"""paho-mqtt client construction shared by the bridge and the gateway."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import paho.mqtt.client as mqtt

from pipeline.config import MqttTarget


def make_client(
    target: MqttTarget, client_id: str, clean_session: bool = True, **kwargs: Any
) -> mqtt.Client:
    """A paho 2.x client with credentials/TLS from the URL and TCP_NODELAY on connect."""
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        **kwargs,
    )
    if target.username:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=10)

    # paho never sets TCP_NODELAY, so a small packet (a PUBLISH, a PUBACK) can wait
    # for the previous one's ACK (Nagle + delayed ACK): measured here under gevent,
    # publish -> receive p50 went from 10.1 ms to 0.125 ms with it set.
    def _nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = _nodelay
    return client
