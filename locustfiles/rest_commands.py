"""REST commands and reads against the gateway, with devices that receive the commands.

The REST -> MQTT round trip is reported by the devices (``command:orin/+/command``)
from the ``issued_at`` the gateway stamps; the HTTP side is Locust's usual
per-endpoint table (``/api/commands/{id}``, ``/api/coordinates/{id}``, ...)::

    locust -f locustfiles/rest_commands.py --headless -u 30 -r 10 -t 60s
"""

from users import MqttDevice, RestCommander
from users.shapes import PresetShape  # noqa: F401


class Device(MqttDevice):
    fixed_count = 20


class Operator(RestCommander):
    weight = 1
