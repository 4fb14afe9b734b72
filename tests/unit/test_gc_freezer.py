"""The gateway's and the load side's garbage-collector policy (pipeline._gc, telemetry._gc)."""

from __future__ import annotations

import gc
import time
import weakref

import gevent

from pipeline._gc import Freezer
from telemetry._gc import Freezer as LoadFreezer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> Node:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


def test_frozen_cycles_are_reclaimed_only_once_the_gateway_is_quiet():
    open_now = [5_000]
    freezer = Freezer(1.0, 600.0, connections=lambda: open_now[0])
    start = time.monotonic()
    try:
        connection = _cycle()
        alive = weakref.ref(connection)
        freezer.step(start + 1)  # frozen while still referenced (a connection's objects)
        assert gc.get_freeze_count() > 0
        del connection  # the connection closes: its cycle is garbage, but frozen
        gc.collect()  # what CPython does by itself: the frozen cycle is out of its reach
        assert alive() is not None
        freezer.step(start + 601)  # due, but 5,000 connections: no full collection
        assert freezer.full_collections == 0 and alive() is not None
        open_now[0] = 40
        freezer.step(start + 602)
        assert freezer.full_collections == 1
        assert alive() is None
        freezer.step(start + 603)  # not due again for another 600 s
        assert freezer.full_collections == 1
    finally:
        gc.unfreeze()


def test_the_load_side_freezes_every_interval_and_hands_back_at_stop():
    freezer = LoadFreezer(every_s=0.01)
    freezer.start()
    try:
        with gevent.Timeout(5):  # a busy machine may be slow; the count is what is checked
            while freezer.freezes < 3:
                gevent.sleep(0.01)
        assert gc.get_freeze_count() > 0
    finally:
        freezer.stop()
    assert gc.get_freeze_count() == 0
