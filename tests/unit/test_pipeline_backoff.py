"""pipeline._backoff: the delays the bridge, consumer and gateway wait."""

from __future__ import annotations

import pytest

from pipeline._backoff import delay


def test_doubles_from_the_first_delay_up_to_the_cap():
    assert [delay(n, 0.1, 5.0) for n in range(8)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    )


def test_a_negative_attempt_is_the_first_and_a_huge_one_is_the_cap():
    assert delay(-1, 0.1, 2.0) == pytest.approx(0.1)
    assert delay(10_000, 0.1, 2.0) == 2.0


def test_jitter_adds_at_most_its_share():
    waits = [delay(3, 0.1, 5.0, jitter=0.25) for _ in range(200)]
    assert all(0.8 <= w <= 1.0 for w in waits)
    assert max(waits) > min(waits)
