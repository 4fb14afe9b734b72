"""The full loop: a device fleet, STOMP and raw WebSocket subscribers, a few commanders.

    python -m pipeline up --detach                     # or point the --*-url options elsewhere
    locust -f locustfiles/pipeline.py --headless -u 53 -r 20 -t 60s --processes 2

Users: ``Device`` (MqttDevice, by weight: every user beyond the fixed ones),
``Dashboard`` (3 STOMP subscribers on /topic/coordinates), ``RawViewer`` (1 raw
WebSocket subscriber), ``Operator`` (1 RestCommander sending commands back over
REST -> MQTT). Change the fixed counts with Locust's own ``--config-users``, e.g.
``--config-users '{"user_class_name": "Dashboard", "fixed_count": 10}'``.
``--shape stages|step|spike|soak`` picks a load shape (``users/shapes.py``).
"""

from users import MqttDevice, RestCommander, StompSubscriber, WsSubscriber
from users.shapes import PresetShape  # noqa: F401  (Locust uses the shape it finds here)


class Dashboard(StompSubscriber):
    fixed_count = 3


class RawViewer(WsSubscriber):
    fixed_count = 1


class Operator(RestCommander):
    fixed_count = 1


class Device(MqttDevice):
    weight = 1
