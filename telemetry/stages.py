"""The pipeline's stages, legs and paths: one table that everything else reads.

A message travels from its publish time ``tp`` through the stages that stamp
the envelope's ``hops`` (:data:`STAMPS`) to a subscriber's receive time. The
stretch that ends at a stage is a **leg** (:data:`LEGS`); a delta that crosses
a stage which left no stamp is named by its legs joined with ``+``
(``kafka+redis``). A message's **path** is its entry protocol and the
subscriber kind, ``{src}→{kind}`` (:func:`path_name`); its entry protocol
decides the first leg it can cross (:data:`ENTRIES`: produced straight into
Kafka, it starts at the ``kafka`` leg). An entry with a door of its own into
Kafka (:data:`ENTRY_LEGS`: HTTP through the gateway's ingest endpoint) has its own
first leg and stamp in place of ``mqtt``/``bridge``, then the same legs.

Like prometheus_client's ``METRIC_TYPES``, :data:`TABLE` is the one place a
stage is added: a new ingest path or hop is one line here plus its stamp in the
pipeline. The envelope (``telemetry.envelope.HOPS``), the ledger's leg names,
the collector's paths, the report's hop tables and the charts' colours come
from it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ENTRIES",
    "ENTRY_LEGS",
    "LEGS",
    "LEG_MEANING",
    "LEG_COLOUR",
    "PATH_SEP",
    "RECEIVE",
    "SRC_LEGS",
    "STAMPS",
    "TABLE",
    "Leg",
    "hop_name",
    "path_name",
    "split_path",
]


class Leg(NamedTuple):
    """One leg of the pipeline: its name, the stamp that closes it, what it is, its colour."""

    name: str
    #: the envelope's ``hops`` key the leg ends at; :data:`RECEIVE` for the last leg
    ends_at: str
    meaning: str
    colour: str


#: What closes the last leg: the subscriber's receive time (not an envelope stamp).
RECEIVE = "receive"

#: The legs in path order (report tables, charts and the web UI sort hops by it).
TABLE: tuple[Leg, ...] = (
    Leg("mqtt", "bridge", "publish → bridge (device → broker → bridge)", "#4c78a8"),
    Leg("kafka", "consumer", "bridge → consumer (Kafka)", "#f58518"),
    Leg("redis", "gateway", "consumer → gateway (Redis)", "#e45756"),
    Leg("push", RECEIVE, "gateway → subscriber (WebSocket/STOMP)", "#72b7b2"),
)

#: First legs that stand in for ``TABLE[0]`` on another entry protocol: the same
#: place on the path, a stamp of their own (``src`` -> its leg).
ENTRY_LEGS: dict[str, Leg] = {
    "http": Leg(
        "http", "gateway_ingest", "publish → gateway ingest (HTTP POST → Kafka ack)", "#54a24b"
    ),
}

#: Leg names in path order, entry legs first: ``("mqtt", "http", "kafka", "redis", "push")``.
LEGS: tuple[str, ...] = (
    TABLE[0].name,
    *(leg.name for leg in ENTRY_LEGS.values()),
    *(leg.name for leg in TABLE[1:]),
)
#: The envelope's hop stamps in path order (a message carries one of the first two):
#: ``("bridge", "gateway_ingest", "consumer", "gateway")``.
STAMPS: tuple[str, ...] = (
    TABLE[0].ends_at,
    *(leg.ends_at for leg in ENTRY_LEGS.values()),
    *(leg.ends_at for leg in TABLE[1:] if leg.ends_at != RECEIVE),
)
_ALL = (*TABLE, *ENTRY_LEGS.values())
LEG_MEANING: dict[str, str] = {leg.name: leg.meaning for leg in _ALL}
LEG_COLOUR: dict[str, str] = {leg.name: leg.colour for leg in _ALL}
#: Entry protocol (the envelope's ``src``) -> the first leg its publish time starts.
ENTRIES: dict[str, str] = {"mqtt": "mqtt", "kafka": "kafka", "http": "http"}

#: Path names are ``{src}→{kind}``.
PATH_SEP = "→"

#: Position of each stamp on a path (``tp`` is 0; the receive is the last); an entry
#: leg's stamp shares the position of ``TABLE[0]``'s.
POSITION: dict[str, int] = {
    **{leg.ends_at: i + 1 for i, leg in enumerate(TABLE)},
    **{leg.ends_at: 1 for leg in ENTRY_LEGS.values()},
}
_PATH_LEGS: tuple[str, ...] = tuple(leg.name for leg in TABLE)
#: The legs a message of each entry protocol crosses, in path order.
SRC_LEGS: dict[str, tuple[str, ...]] = {
    src: (ENTRY_LEGS[src].name if src in ENTRY_LEGS else _PATH_LEGS[0], *_PATH_LEGS[1:])
    for src in ENTRIES
}
#: Position of the publish time by entry protocol.
ENTRY_POSITION: dict[str, int] = {src: SRC_LEGS[src].index(leg) for src, leg in ENTRIES.items()}


def path_name(src: str, kind: str) -> str:
    """``("mqtt", "stomp")`` -> ``"mqtt→stomp"``."""
    return f"{src}{PATH_SEP}{kind}"


def split_path(path: str) -> tuple[str, str]:
    """``"mqtt→stomp"`` -> ``("mqtt", "stomp")`` (``(path, "")`` without a separator)."""
    src, _, kind = path.partition(PATH_SEP)
    return src, kind


def hop_name(src: str, a: int, b: int) -> str:
    """Name of the delta between path positions ``a`` < ``b`` (legs joined with ``+``)."""
    legs = SRC_LEGS.get(src, _PATH_LEGS)
    return "+".join(legs[max(a, ENTRY_POSITION.get(src, 0)) : b])
