"""The command's output: progress logged through one handler (-v adds debug lines, -q keeps only
warnings and errors), data printed, the default output as it was before there was logging."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

import pytest

from runner.cli import main
from runner.log import Say

HOLDER = "pid 4242 (`daskfleet up`, up -c cluster.yaml) since 2025-01-01T00:00:00+00:00"


@pytest.fixture
def hosts_file(tmp_path, monkeypatch) -> Path:
    """A cluster of existing hosts that were never provisioned: `down` takes its lock, finds
    nothing recorded and stops nothing (no SSH, no Terraform)."""
    monkeypatch.setenv("DASKFLEET_STATE_DIR", str(tmp_path / "state"))
    key = tmp_path / "id"
    key.write_text("k")
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"10.0.0.{i} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UO"
                             "oqKLsabgH5C9okWi0dh2l9GKJl\n" for i in (1, 2)))
    path = tmp_path / "cluster.yaml"
    path.write_text(f"name: x\nprovider: hosts\nssh: {{private_key: {key}, known_hosts: {known}}}\n"
                    "hosts:\n  - {name: a, address: 10.0.0.1, role: scheduler}\n"
                    "  - {name: b, address: 10.0.0.2, role: worker}\n")
    return path


def _down_while_locked(path: Path, monkeypatch, before: tuple[str, ...] = (),
                       after: tuple[str, ...] = ()) -> tuple[int, Path]:
    """`daskfleet [before] down -c PATH [after]` while another command holds the cluster's lock:
    `down` says who holds it and waits; the holder lets go when `down` first waits."""
    import time

    from runner import state

    lock = path.parent / "state" / "x" / "lock"
    lock.parent.mkdir(parents=True)
    held = open(lock, "a+")  # noqa: SIM115 - closed once `down` waits
    fcntl.flock(held, fcntl.LOCK_EX)
    held.write(HOLDER + "\n")
    held.flush()

    class Clock:
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:  # state.locked found the lock taken
            if not held.closed:
                fcntl.flock(held, fcntl.LOCK_UN)
                held.close()
            time.sleep(seconds)

    monkeypatch.setattr(state, "time", Clock)
    try:
        return main([*before, "down", "-c", str(path), *after]), lock
    finally:
        held.close()


def test_the_default_output_is_what_it_was(hosts_file, capsys, monkeypatch):
    code, lock = _down_while_locked(hosts_file, monkeypatch)
    out, err = capsys.readouterr()
    assert code == 0
    # byte for byte the line the command printed before it logged
    assert out == f"[daskfleet] waiting: {HOLDER} holds the cluster's lock ({lock})\n"
    assert err == ""


@pytest.mark.parametrize("where", ["before", "after"])  # the sub-command's name
def test_quiet_hides_progress_and_keeps_errors(hosts_file, tmp_path, capsys, monkeypatch, where):
    flag = {"before": ("-q",), "after": ()}, {"before": (), "after": ("--quiet",)}
    code, _ = _down_while_locked(hosts_file, monkeypatch, before=flag[0][where],
                                 after=flag[1][where])
    assert code == 0
    assert capsys.readouterr() == ("", "")  # the waiting line is gone
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nprovider: lab\ndask: {threads_per_workr: 2}\n")
    args = ["-q", "status", "-c", str(bad)] if where == "before" else \
        ["status", "-c", str(bad), "--quiet"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("daskfleet: error: ") and "threads_per_workr: unknown key" in err


def test_quiet_keeps_warnings(capsys, monkeypatch):
    from runner import cli

    def warn(args) -> int:
        logging.getLogger("runner.cluster.cluster").warning("WARNING: degraded: no live worker")
        logging.getLogger("runner.cluster.cluster").info("starting 1 worker(s): w0@b")
        return 0

    monkeypatch.setattr(cli, "cmd_scale", warn)
    assert main(["scale", "1", "-q"]) == 0
    assert capsys.readouterr().out == "[daskfleet] WARNING: degraded: no live worker\n"


@pytest.mark.parametrize("flags", [["-v"], ["--verbose"]])
def test_verbose_adds_debug_lines(hosts_file, capsys, monkeypatch, flags):
    code, lock = _down_while_locked(hosts_file, monkeypatch, before=tuple(flags))
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    # the progress line as without -v, then the detail, named by the module that logged it
    assert f"[daskfleet] waiting: {HOLDER} holds the cluster's lock ({lock})" in lines
    assert f"[daskfleet] debug runner.state: holding the cluster's lock {lock} for " \
           "`daskfleet down`" in lines
    assert any(line.startswith(f"[daskfleet] debug runner.config: {hosts_file}: cluster x, "
                               "provider hosts") for line in lines), lines
    # and none of it without -v
    assert main(["down", "-c", str(hosts_file)]) == 0
    assert capsys.readouterr().out == ""


def test_debug_still_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    from runner.errors import ConfigError

    with pytest.raises(ConfigError, match="not valid YAML"):
        main(["--debug", "status", "-c", str(bad)])
    with pytest.raises(ConfigError, match="not valid YAML"):
        main(["status", "-c", str(bad), "--debug", "-v"])


def test_the_command_leaves_logging_as_it_found_it(hosts_file, capsys):
    logger = logging.getLogger("runner")
    before = (logger.level, logger.propagate, list(logger.handlers))
    assert main(["-v", "down", "-c", str(hosts_file)]) == 0
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


def test_a_progress_callable_still_gets_every_line(caplog):
    """The Python API's compatibility path: a caller's ``progress`` gets the lines, warnings
    too; without one they go to the module's logger at their level."""
    said: list[str] = []
    record: list[str] = []
    say = Say(said.append, logging.getLogger("runner.test"), record=record.append)
    say("one")
    say.warning("WARNING: two")
    assert said == record == ["one", "WARNING: two"]
    inner = Say(say, logging.getLogger("runner.inner"))  # a Say handed down to a lower layer
    inner.warning("WARNING: three")
    assert said[-1] == "WARNING: three"
    with caplog.at_level(logging.DEBUG, logger="runner"):
        logged = Say(None, logging.getLogger("runner.test"))
        logged("four")
        logged.warning("WARNING: five")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("runner.test", logging.INFO, "four"), ("runner.test", logging.WARNING, "WARNING: five")]



def test_a_module_run_with_python_dash_m_logs_under_runner():
    """`python -m runner.cli` (the e2e tests', a checkout's way) runs the module as __main__: a
    logger named after ``__name__`` would be "__main__", outside the ``runner`` loggers the
    command's handler prints, and its lines (up's summary) would be lost."""
    root = Path(__file__).resolve().parents[2] / "runner"
    wrong = [str(p.relative_to(root.parent)) for p in root.rglob("*.py")
             if 'if __name__ == "__main__"' in (text := p.read_text())
             and "getLogger(__name__)" in text]
    assert wrong == [], f"name the logger (logging.getLogger('runner.<module>')) in {wrong}"
