"""Kafka helpers shared by the stack, the bridge and the consumer (kafka-python admin)."""

from __future__ import annotations

import logging
import time

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, topics: dict[str, int], timeout: float = 30.0) -> None:
    """Create each topic with its partition count unless it exists.

    The embedded Apache Kafka runs with ``auto.create.topics.enable=false`` (a
    typo must not create a topic), and a producer to a missing topic waits and
    then fails, so the services create theirs first; where they exist (any
    cluster, any restart) this only lists them. A topic that exists with another
    partition count keeps it (Kafka can only add partitions, which moves keys between
    them): that is logged once, as ``--partitions`` would otherwise seem to do nothing.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="pipeswarm-admin")
            try:
                existing = set(admin.list_topics())
                missing = [NewTopic(t, n, 1) for t, n in topics.items() if t not in existing]
                if missing:
                    try:
                        admin.create_topics(missing)
                    except TopicAlreadyExistsError:
                        pass
                _warn_other_counts(admin, {t: n for t, n in topics.items() if t in existing})
                return
            finally:
                admin.close()
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("kafka not ready for topic creation (%s); retrying", exc)
            time.sleep(0.5)


def _warn_other_counts(admin: KafkaAdminClient, wanted: dict[str, int]) -> None:
    if not wanted:
        return
    for meta in admin.describe_topics(list(wanted)):
        name = meta.get("name") or meta.get("topic")  # the key depends on the metadata version
        have = len(meta.get("partitions") or [])
        if name in wanted and have and have != wanted[name]:
            log.warning(
                "topic %s already exists with %d partitions, not %d; it keeps %d (delete "
                "the topic, or the stack's data with `python -m pipeline down`, to change it)",
                name, have, wanted[name], have,
            )  # fmt: skip
