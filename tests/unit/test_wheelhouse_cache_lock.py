"""Two builders of the wheelhouse cache at once (two `up`s, the two e2e sessions): the second
waits for the first, and says so, instead of renaming into the same folders."""

from __future__ import annotations

import threading
import time

from runner.provision.wheelhouse import _cache_lock


def test_a_second_builder_waits_for_the_first_and_says_so(tmp_path):
    said, order = [], []
    first_in = threading.Event()

    def first():
        with _cache_lock(tmp_path, said.append):
            first_in.set()
            time.sleep(0.5)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    first_in.wait(5)
    with _cache_lock(tmp_path, said.append):
        order.append("second in")
    t.join()
    assert order == ["first done", "second in"]
    assert said == [f"wheelhouse: waiting for another daskfleet building in {tmp_path}"]


def test_a_lone_builder_does_not_wait(tmp_path):
    said = []
    with _cache_lock(tmp_path / "new", said.append):
        pass
    assert said == [] and (tmp_path / "new" / ".lock").exists()
