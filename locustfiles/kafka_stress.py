"""Kafka stress: producers write device messages straight into ``mqtt-messages``.

The Stock-Kafka3 threads x messages test: each user is one producer thread
with its own device key; ``--kafka-interval`` sets its schedule (0 = back to
back) and ``--kafka-max-messages`` bounds what each sends. A STOMP subscriber
follows them through consumer -> Redis -> gateway (path ``kafka→stomp``)::

    locust -f locustfiles/kafka_stress.py --headless -u 11 -r 11 -t 30s \
        --kafka-interval 0.01 --kafka-max-messages 1000
"""

from users import KafkaProducer, StompSubscriber
from users.shapes import PresetShape  # noqa: F401


class Watcher(StompSubscriber):
    fixed_count = 1


class Producer(KafkaProducer):
    weight = 1
