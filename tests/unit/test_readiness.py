"""readiness.poll_until, the one wait of bring-up: it returns once ready, stops early when what it
waits for died, and times out with the caller's error (no lab: the clock and the checks are fakes
of the module's own `time`)."""

from __future__ import annotations

import pytest

from runner.cluster import readiness


class FakeClock:
    """time.monotonic and time.sleep for the module under test: sleeping advances the clock."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(readiness.time, "monotonic", c.monotonic)
    monkeypatch.setattr(readiness.time, "sleep", c.sleep)
    return c


def test_returns_as_soon_as_ready_with_a_capped_backoff(clock):
    answers = iter([False] * 8 + [True])
    readiness.poll_until(lambda: next(answers), 60, alive=lambda: None,
                         timed_out=lambda: AssertionError("timed out"))
    assert clock.sleeps[:4] == [0.05, 0.1, 0.2, readiness.POLL_CAP_S]
    assert max(clock.sleeps) == readiness.POLL_CAP_S and len(clock.sleeps) == 8


def test_a_dead_process_stops_the_wait_before_the_timeout(clock):
    checks = []

    def alive():
        checks.append(clock.now)
        if len(checks) == 2:
            raise RuntimeError("the scheduler exited")

    with pytest.raises(RuntimeError, match="exited"):
        readiness.poll_until(lambda: False, 600, alive=alive,
                             timed_out=lambda: AssertionError("timed out"))
    # liveness goes over SSH: checked about once a second, not on every poll
    assert checks[1] - checks[0] >= readiness.ALIVE_EVERY_S
    assert clock.now - 1000.0 < 5


def test_past_the_deadline_the_callers_error_is_raised(clock):
    class NotReady(Exception):
        pass

    with pytest.raises(NotReady):
        readiness.poll_until(lambda: False, 3, alive=lambda: None, timed_out=NotReady)
    assert 3 <= clock.now - 1000.0 <= 3 + readiness.POLL_CAP_S
