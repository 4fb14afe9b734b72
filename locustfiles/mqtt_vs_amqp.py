"""MQTT vs AMQP: the same fleet and subscribers through Mosquitto and through RabbitMQ.

    python -m pipeline up --detach --amqp
    locust -f locustfiles/mqtt_vs_amqp.py --headless -u 102 -r 50 -t 60s \
        --device-interval 0.1 --mqtt-qos 1 --amqp-confirms 1
    python analyze.py results/<run id>/      # report.html: "MQTT vs AMQP"

Half the devices publish MQTT (``compare/{id}/coordinates``, a topic the
pipeline's bridge does not take, so each broker routes a message to one subscriber) to Mosquitto,
half AMQP 0-9-1 (exchange ``sensors``, key ``sensors.{id}.coordinates``) to
RabbitMQ, same envelope, same timetable; one subscriber per broker takes every
device message straight from it (``mqtt→mqtt``, ``amqp→amqp`` in the ledger).
QoS 1 on the MQTT side, persistent messages with publisher confirms on the
AMQP side (``--amqp-confirms 0`` / ``--mqtt-qos 0`` for the fire-and-forget
pair). ``protocols.json`` in the results folder adds each broker's CPU seconds and
the bytes on the wire per message (``users.broker_compare``).

Delivery under a broker restart: ``--faults 'restart:mosquitto@20s,restart:rabbitmq@40s'``.
"""

from users import AmqpDevice, AmqpSubscriber, MqttDevice, MqttSubscriber
from users.broker_compare import compare_brokers
from users.shapes import PresetShape  # noqa: F401

compare_brokers(mqtt="mosquitto", amqp="rabbitmq")


class MqttWatcher(MqttSubscriber):
    fixed_count = 1
    topic = "compare/+/coordinates"


class AmqpWatcher(AmqpSubscriber):
    fixed_count = 1


class MqttFleet(MqttDevice):
    weight = 1
    # not sensors/…: the embedded pipeline's bridge subscribes to that, and Mosquitto would
    # route every message twice (bridge + watcher) while RabbitMQ routes it once
    publish_topic = "compare/{device_id}/coordinates"


class AmqpFleet(AmqpDevice):
    weight = 1
