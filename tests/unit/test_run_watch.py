"""The run record of cluster faults: recomputed keys, KilledWorker, cancelled runs, messages."""

from __future__ import annotations

import json
from types import SimpleNamespace

from runner.batch.artifacts import interruption, write_failed_run
from runner.jobs.watch import RunWatch, killed_worker, recomputed
from runner.signals import Terminated


def test_keys_that_finished_more_than_once_are_the_recomputed_work():
    stream = [{"key": "read_shard-1"}, {"key": "read_shard-2"}, {"key": "read_shard-1"},
              {"key": "mix-9", "status": "OK"}, {"key": "mix-9", "status": "error"}]
    assert recomputed(stream) == {"read_shard-1": 2}
    assert recomputed([]) == {}


class KilledWorker(Exception):  # distributed's class is matched by name, as the client sees it
    pass


def test_a_killed_worker_is_found_behind_the_phase_error():
    try:
        try:
            raise KilledWorker("Attempted to run task 'train-1' on 4 different workers")
        except KilledWorker as e:
            raise RuntimeError("train (epoch 1) failed") from e
    except RuntimeError as outer:
        assert isinstance(killed_worker(outer), KilledWorker)
    assert killed_worker(ValueError("bad data")) is None


def test_interruptions_are_cancellations_naming_the_signal():
    assert interruption(KeyboardInterrupt()) == \
        "cancelled: interrupted on the control machine (SIGINT)"
    assert "(SIGTERM)" in interruption(Terminated("SIGTERM"))
    assert interruption(ValueError("x")) is None


def test_a_run_cancelled_before_the_cluster_is_recorded_as_cancelled(tmp_path):
    write_failed_run(tmp_path / "r1", {"run_id": "r1", "job": "j"}, Terminated("SIGTERM"),
                     ["dataset ..."])
    status = json.loads((tmp_path / "r1" / "status.json").read_text())
    assert status["status"] == "cancelled" and "SIGTERM" in status["error"]
    assert not (tmp_path / "r1.tmp").exists()


def _watch(status: str = "running") -> RunWatch:
    client = SimpleNamespace(status=status, scheduler=SimpleNamespace(
        address="tls://198.18.0.11:8786"))
    w = RunWatch(client, "clusters/lab.yaml", "lab1", n_features=8388608, job_path="big.yaml")
    w.at_start = {"tls://198.18.0.12:40001": {"name": "lab2-w0", "memory_limit": 700 * 2**20}}
    return w


def test_a_lost_scheduler_is_named_with_what_to_do_and_asked_nothing():
    w = _watch(status="closed")  # the client gave up on its scheduler
    error = w.explain(RuntimeError("train (epoch 2) failed: the cluster cancelled its tasks"))
    msg = str(error)
    assert "scheduler tls://198.18.0.11:8786 on host lab1 was lost" in msg
    assert "daskfleet up -c clusters/lab.yaml" in msg and "lab restart lab1" in msg
    summary = w.summary()
    assert summary["scheduler_lost"] is True and summary["workers_at_start"] == ["lab2-w0"]
    assert w.explain(KeyboardInterrupt()) is None


def test_tasks_that_kill_their_workers_name_the_memory_limit_and_the_keys(monkeypatch):
    w = _watch()
    monkeypatch.setattr(w, "scheduler_answers", lambda: True)
    monkeypatch.setattr(w, "_events", lambda topic: [{"worker": "a", "rss": 700 * 2**20}] * 4)
    error = RuntimeError("train failed")
    error.__cause__ = KilledWorker("task x")
    msg = str(w.explain(error))
    assert "memory limit is 0.68 GiB (dask.memory_limit in clusters/lab.yaml)" in msg
    assert "4 time(s)" in msg and "8,388,608 x 4 bytes = 32 MiB per class" in msg
    assert "Lower features.n_features in big.yaml" in msg
    assert w.explain(ValueError("a bad shard")) is None


def test_one_question_the_scheduler_cannot_answer_leaves_the_others_in_the_record(monkeypatch):
    w = _watch()
    monkeypatch.setattr(w, "scheduler_answers", lambda: True)
    monkeypatch.setattr(w, "_workers", lambda: {"tls://198.18.0.12:40001": {"name": "lab2-w0"}})
    monkeypatch.setattr(w, "_events", lambda topic: [])

    def ask(method, **kwargs):
        raise TimeoutError("no answer in 10 s")

    monkeypatch.setattr(w, "_ask", ask)  # the task stream times out
    summary = w.summary()
    assert summary["workers_at_end"] == ["lab2-w0"] and summary["lost_workers"] == []
    assert "task stream: TimeoutError: no answer in 10 s" in summary["error"]
    assert summary["recomputed_tasks"] == 0


def test_removals_come_from_each_workers_own_topic_never_all(monkeypatch):
    """The "all" topic keeps the scheduler's last 1000 events of every kind (low-level-log-length):
    on a long-lived scheduler a removal early in a run can be gone from it by the end."""
    w = _watch()  # lab2-w0 at tls://198.18.0.12:40001 at the start
    w.t0 = 100.0
    monkeypatch.setattr(w, "scheduler_answers", lambda: True)
    monkeypatch.setattr(w, "_workers", lambda: {"tls://198.18.0.13:40005": {"name": "lab3-w1"}})
    asked = []

    def ask(method, **kwargs):
        asked.append(kwargs.get("topic"))
        if method == "events" and kwargs["topic"] == "tls://198.18.0.12:40001":
            return [(99.0, {"action": "remove-worker"}),  # before the run: not this run's
                    (130.5, {"action": "remove-worker", "lost-computed-tasks": ["a", "b"],
                             "processing-tasks": ["c"], "expected": False})]
        return []

    monkeypatch.setattr(w, "_ask", ask)
    summary = w.summary()
    assert "all" not in asked
    assert summary["lost_workers"] == ["lab2-w0"] and summary["joined_workers"] == ["lab3-w1"]
    assert summary["worker_removals"] == [{
        "worker": "lab2-w0", "lost_computed_tasks": 2, "processing_tasks": 1, "expected": False,
        "at": 130.5, "seconds_into_run": 30.5}]
