"""What daskfleet tells its user while it works: logging, set up once by the CLI.

Two kinds of output, kept apart:

- **Data**: what a command answers, printed to stdout by runner/cli.py and runner/cli_batch.py
  with ``print``: ``status`` (and every ``--json``), the ``runs`` tables, ``runs show`` and
  ``runs wait``, the ``plan`` report, ``lab status``, the run id of ``submit --detach``, the
  metrics and folder of a run that ``submit`` and ``predict`` made, ``logs``. Scripts and tests
  read it; ``-q`` never hides it.
- **Log**: the progress of the work ("terraform: apply", "starting 2 worker(s)", "WARNING: ...").
  Each module logs to its own ``logging.getLogger(__name__)`` (all under ``runner``): INFO for
  the lines a user sees by default, WARNING for the warnings, DEBUG for detail that only ``-v``
  shows. ``cli_output`` gives the ``runner`` logger the one handler that prints them, on stdout
  as ``[daskfleet] <message>``: byte for byte what the command printed before it logged.

The Python API prints nothing by itself: its progress goes to the same loggers (configure
``logging``, e.g. ``logging.basicConfig(level=logging.INFO)``, to see it). A function that takes
``progress=`` still hands every line to that callable instead, as it always did (tests and
scripts collect the lines that way): ``Say`` is that choice, made once per function.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[str], None]

ROOT = "runner"  # the package's loggers are runner.<module>
PREFIX = "[daskfleet] "


class Say:
    """Progress lines of one piece of work: to the caller's ``progress`` callable when it gave
    one (every line, warnings too; a callable with a ``warning`` method of its own, such as
    another Say, gets the warnings there), else to ``logger``: INFO, and WARNING for
    ``warning``. ``record``, when given, also gets every line (a run's log file)."""

    def __init__(self, progress: Progress | None, logger: logging.Logger,
                 record: Callable[[str], None] | None = None):
        self.progress = progress
        self.logger = logger
        self.record = record

    def __call__(self, message: str) -> None:
        self._emit(logging.INFO, message)

    def warning(self, message: str) -> None:
        self._emit(logging.WARNING, message)

    def _emit(self, level: int, message: str) -> None:
        if self.record is not None:
            self.record(message)
        if self.progress is None:
            self.logger.log(level, message)
        elif level >= logging.WARNING:
            warn = getattr(self.progress, "warning", None)
            (warn if callable(warn) else self.progress)(message)
        else:
            self.progress(message)


class _Formatter(logging.Formatter):
    """``<prefix><message>`` for INFO and above, as the command printed before it logged;
    below INFO (only with -v), the level and the logger's name as well."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno < logging.INFO:
            return f"{self.prefix}{record.levelname.lower()} {record.name}: {message}"
        return self.prefix + message


class _CurrentStdout(logging.StreamHandler):
    """A handler on ``sys.stdout`` as it is when a record comes, not as it was when the handler
    was made (pytest's capsys and contextlib.redirect_stdout replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # under the handler's lock, as every emit
        super().emit(record)


@contextmanager
def cli_output(level: int = logging.INFO, prefix: str = PREFIX) -> Iterator[None]:
    """The ``daskfleet`` command's log output while it runs: the ``runner`` loggers' records of
    ``level`` and above (INFO by default; DEBUG with -v; WARNING with -q) printed on stdout
    after ``prefix``, and not passed on to the root logger (nothing is printed twice).
    Restored on exit, so a process that calls ``main()`` more than once (tests) starts from the
    same state. A detached run's driver uses it too, with no prefix (its log file's lines)."""
    logger = logging.getLogger(ROOT)
    handler = _CurrentStdout()
    handler.setFormatter(_Formatter(prefix))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


__all__ = ["Progress", "Say", "cli_output"]
