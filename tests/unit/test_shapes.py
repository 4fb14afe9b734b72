"""The shape presets give the users Locust should have at each second."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from users.exceptions import ConfigError
from users.shapes import (
    RAMP_SECONDS,
    SPIKE_AT,
    SPIKE_SECONDS,
    SPIKE_USERS,
    STEP_SECONDS,
    STEP_USERS,
    PresetShape,
    parse_stages,
)


def shape_at(t: float, **opts) -> tuple[int, float] | None:
    base = dict(
        num_users=100,
        spawn_rate=10.0,
        shape="constant",
        shape_stages="",
        step_users=10,
        step_seconds=10.0,
        spike_users=0,
        spike_at=30.0,
        spike_seconds=10.0,
        ramp_seconds=60.0,
    )
    shape = PresetShape()
    shape.runner = SimpleNamespace(
        environment=SimpleNamespace(parsed_options=SimpleNamespace(**{**base, **opts}))
    )
    shape.get_run_time = lambda: t  # type: ignore[method-assign]
    return shape.tick()


def test_constant_is_plain_users_and_rate():
    assert shape_at(0) == (100, 10.0)
    assert shape_at(9999) == (100, 10.0)


def test_stages_hold_each_stage_then_stop():
    opts = dict(shape="stages", shape_stages="10:300,10:600:50")
    assert shape_at(0, **opts) == (300, 300.0)
    assert shape_at(9.9, **opts) == (300, 300.0)
    assert shape_at(10, **opts) == (600, 50.0)
    assert shape_at(20, **opts) is None


def test_step_adds_users_until_the_target():
    assert shape_at(0, shape="step") == (10, 10.0)
    assert shape_at(35, shape="step") == (40, 10.0)
    assert shape_at(500, shape="step") == (100, 10.0)


def test_spike_goes_up_and_comes_back():
    assert shape_at(29, shape="spike") == (100, 10.0)
    assert shape_at(30, shape="spike") == (400, 400.0)
    assert shape_at(40, shape="spike") == (100, 10.0)
    assert shape_at(31, shape="spike", spike_users=150) == (150, 150.0)


def test_soak_ramps_then_holds():
    assert shape_at(0, shape="soak") == (1, 10.0)
    assert shape_at(30, shape="soak") == (50, 10.0)
    assert shape_at(3600, shape="soak") == (100, 10.0)


@pytest.mark.parametrize("bad", ["", "10", "a:b", "10:-1", "0:10", "10:10:0"])
def test_bad_stages_are_one_clear_error(bad):
    with pytest.raises(ValueError, match="SECONDS:USERS"):
        parse_stages(bad)


def test_run_time_stops_every_preset():
    # the last second before -t still follows the preset (100 users, 10/s by default)
    before = {"constant": (100, 10.0), "step": (60, 10.0), "spike": (100, 10.0), "soak": (98, 10.0)}
    for preset, users_and_rate in before.items():
        assert shape_at(59, shape=preset, run_time=60) == users_and_rate
        assert shape_at(60, shape=preset, run_time=60) is None


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        (STEP_SECONDS, 0.0, "must be more than 0 seconds per step"),
        (STEP_USERS, 0, "must be 1 or more users per step"),
        (SPIKE_AT, -5.0, "must be 0 or more seconds"),
        (SPIKE_SECONDS, -1.0, "must be 0 or more seconds"),
        (RAMP_SECONDS, -60.0, "must be 0 or more seconds"),
        (SPIKE_USERS, -1, "must be 0"),
    ],
)
def test_negative_durations_and_counts_are_one_sentence_before_the_run(option, value, why):
    with pytest.raises(ConfigError) as err:
        option.read(SimpleNamespace(**{option.dest: value}))
    assert str(err.value).startswith(f"{option.flag} {value!r}: {why}")
