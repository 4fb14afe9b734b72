"""RedisUser: the pipeline's own Redis operations as Locust requests.

redis-py on gevent sockets (Locust patches them), one connection per user, so
a user's requests run one after another like the consumer's and the gateway's.
Every operation is timed around the round trip and reported with
``request_type`` ``REDIS`` and these names (task weights in brackets):

=====================  ==============================================  ======
name                   command                                         weight
=====================  ==============================================  ======
``SET latest``         ``SET {prefix}latest:{id} <json> EX ttl``       4
``GET latest``         ``GET {prefix}latest:{id}``                     4
``HINCRBY counts``     ``HINCRBY {prefix}counts {id} 1``               2
``XADD stream``        ``XADD {prefix}stream MAXLEN ~ n * m <json>``   2
``MULTI batch``        one MULTI/EXEC of ``batch`` × (SET, HINCRBY,    1
                       XADD) — the consumer's write per Kafka batch
=====================  ==============================================  ======

The keys live under :attr:`RedisUser.key_prefix` (``pipeswarm:bench:``), away
from the pipeline's own ``pipeswarm:latest:…``, so a running pipeline's state is
never touched. The server is ``--redis-url`` (``.pipeswarm/stack.json``'s when
the embedded stack is up)::

    class Writer(RedisUser):
        wait_time = constant(0)      # as fast as the server answers
        batch = 50

``locustfiles/redis_bench.py`` runs it; ``python -m bench redis`` runs that and
``redis-benchmark`` against the same server and prints both.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from locust import User, constant, task

from users._config import settings

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["REQUEST_TYPE", "RedisUser"]

REQUEST_TYPE = "REDIS"


class RedisUser(User):
    """The pipeline's Redis operations against ``--redis-url``, one connection per user."""

    abstract = True
    wait_time = constant(0)
    #: prefix of every key written or read
    key_prefix: str = "pipeswarm:bench:"
    #: devices whose keys are used (ids ``bench-0001``…)
    devices: int = 100
    #: TTL of the latest-coordinates keys, like the pipeline's REDIS_TTL
    ttl_s: int = 3600
    #: approximate cap of the stream, like the pipeline's STREAM_MAXLEN
    stream_maxlen: int = 100_000
    #: records per ``MULTI batch`` request
    batch: int = 10

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        url = settings(environment).redis_url
        self.client = redis.Redis.from_url(url, single_connection_client=True)
        self.seq = 0

    def on_stop(self) -> None:
        self.client.close()

    # --- the operations -----------------------------------------------------
    def _device(self) -> str:
        return f"bench-{random.randint(1, self.devices):04d}"

    def _doc(self, device: str) -> str:
        self.seq += 1
        return json.dumps(
            {"device_id": device, "x": random.uniform(0, 100), "y": random.uniform(0, 100),
             "timestamp": time.time(), "seq": self.seq}
        )  # fmt: skip

    def _timed(self, name: str, call: Callable[[], Any], length: int = 0) -> Any:
        start = time.perf_counter()
        result: Any = None
        exc: Exception | None = None
        try:
            result = call()
        except redis.RedisError as err:
            exc = err
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )
        return result

    @task(4)
    def set_latest(self) -> None:
        device = self._device()
        doc = self._doc(device)
        key = f"{self.key_prefix}latest:{device}"
        self._timed("SET latest", lambda: self.client.set(key, doc, ex=self.ttl_s), len(doc))

    @task(4)
    def get_latest(self) -> None:
        key = f"{self.key_prefix}latest:{self._device()}"
        value = self._timed("GET latest", lambda: self.client.get(key))
        if value is not None:
            json.loads(value)  # what a reader does with it

    @task(2)
    def hincrby_counts(self) -> None:
        device = self._device()
        self._timed(
            "HINCRBY counts", lambda: self.client.hincrby(f"{self.key_prefix}counts", device, 1)
        )

    @task(2)
    def xadd_stream(self) -> None:
        doc = self._doc(self._device())
        self._timed(
            "XADD stream",
            lambda: self.client.xadd(
                f"{self.key_prefix}stream", {"m": doc}, maxlen=self.stream_maxlen, approximate=True
            ),
            len(doc),
        )

    @task(1)
    def multi_batch(self) -> None:
        pipe = self.client.pipeline(transaction=True)
        size = 0
        for _ in range(self.batch):
            device = self._device()
            doc = self._doc(device)
            size += len(doc)
            pipe.set(f"{self.key_prefix}latest:{device}", doc, ex=self.ttl_s)
            pipe.hincrby(f"{self.key_prefix}counts", device, 1)
            pipe.xadd(
                f"{self.key_prefix}stream", {"m": doc}, maxlen=self.stream_maxlen, approximate=True
            )
        self._timed("MULTI batch", pipe.execute, size)
