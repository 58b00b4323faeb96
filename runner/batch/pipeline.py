"""Control side: run a job's batch on a Dask cluster and write the run folder.

Phases: load -> clean -> vectorize -> train -> evaluate -> save. Every per-row step runs on the
workers as a task per shard (``client.map``), each phase waits for its tasks so that it can be
timed, and the vectorized partitions stay on the workers (futures) for all epochs and for the
evaluation. With ``features.cache: false`` nothing per partition is kept between passes: every
task of every epoch and of the evaluation re-reads, cleans and hashes its shard, so the workers'
memory stays flat as the corpus grows (at the price of a re-read per pass). The client only
ever holds small things: row and label counts, confusion matrices, and at the end the model's
weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed import Future, performance_report, wait
from distributed.client import FuturesCancelledError

from runner.batch import (
    evaluate,
    features,
    memory,
    naive_bayes,
    parts,
    results,
    split,
    store_load,
    train,
)
from runner.batch.artifacts import (
    STATUS_FILE,
    SUCCESS_FILES,
    RunLog,
    copy_atomic,
    interruption,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)
from runner.batch.model import model_stamp, save_model
from runner.batch.report import render_report
from runner.dask_workers import joined_workers
from runner.errors import BatchError, DaskfleetError, ModelTooLarge
from runner.log import Progress, Say

if TYPE_CHECKING:
    from distributed import Client

    from runner.batch.job import JobSpec

logger = logging.getLogger(__name__)


def progress_bar_wanted() -> bool:
    """dask's text progress bar only in a terminal; logs and pipes get the phase lines alone."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _draw_progress_bar(futures: Sequence[Future]) -> None:
    """dask's TextProgressBar on stderr until ``futures`` are done (it writes to stdout, which
    would mix with the command's output)."""
    from distributed.diagnostics.progressbar import TextProgressBar

    with contextlib.redirect_stdout(sys.stderr):
        try:
            TextProgressBar(list(futures), width=30)
        except Exception:  # noqa: BLE001 - the bar is cosmetic; the wait below decides
            pass


def _check(futures: Sequence[Future], phase: str, paths: Sequence[str] | None = None,
           bar: bool = False) -> None:
    """Wait for ``futures``; the first failed task becomes a BatchError naming phase and shard.
    With ``bar``, in a terminal, dask's progress bar shows while they run."""
    if bar and progress_bar_wanted():
        _draw_progress_bar(futures)
    try:
        wait(list(futures))
    except FuturesCancelledError as e:  # a worker or the scheduler dropped the tasks
        raise BatchError(f"{phase} failed: the cluster cancelled its tasks ({e}); check "
                         "`daskfleet status` and the worker logs") from e
    for i, f in enumerate(futures):
        if f.status == "error":
            exc = f.exception()
            where = f" on shard {paths[i]}" if paths is not None and i < len(paths) else ""
            hint = ("; a shard is read only on the hosts it was shipped to (data.copies), and "
                    "they had no worker: bring them back (`daskfleet up`) or raise data.copies"
                    if type(exc).__name__ == "NoValidWorkerError" else "")
            raise BatchError(
                f"{phase} failed{where}: {type(exc).__name__}: {exc}{hint}"
            ) from exc
        if f.status != "finished":
            raise BatchError(f"{phase} failed: task {f.key} ended as {f.status!r}")


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_job(
    client: Client,
    job: JobSpec,
    shard_paths: Sequence[str | Path],
    run_dir: str | Path,
    context: dict | None = None,
    progress: Progress | None = None,
    log_lines: Sequence[str] = (),
    watch: Any = None,
    shard_hosts: Sequence[Sequence[str]] | None = None,
) -> dict:
    """Run ``job`` on the cluster behind ``client`` over the shards at ``shard_paths``.
    ``shard_hosts``: per shard, the hosts (Dask addresses) that hold it, when not every worker's
    host does (``data.copies``); its reads run there only.

    ``shard_paths`` are paths as seen on the worker hosts; the client never opens them. Everything
    is written into ``<run_dir>.tmp``, renamed to ``run_dir`` at the end. A successful run holds
    ``status.json`` ({"status": "succeeded"}), ``model.joblib``, ``metrics.json``,
    ``report.html``, ``performance.html``, ``job.yaml`` (when ``context["job_path"]`` names the
    job file) and ``logs/run.log``; a failed run holds ``status.json`` ({"status": "failed",
    "error": ...}), its logs and performance report, and never a model or metrics. Returns the
    metrics; a failure raises BatchError after the failed run folder is written. ``log_lines``:
    earlier lines of this run (from the control machine), written first into ``logs/run.log``.
    ``watch`` (runner.jobs.watch.RunWatch): its ``summary()`` goes into status.json and
    metrics.json as ``cluster_events``, and its ``explain(error)`` may replace a failure's error.
    An interrupted run (KeyboardInterrupt, SIGTERM raised as one) is recorded as ``cancelled``.
    """
    run_dir = Path(run_dir)
    if run_dir.exists():
        raise BatchError(f"run folder {run_dir} already exists; choose another run id")
    context = dict(context or {})
    tmp = run_dir.with_name(run_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    said = Say(progress, logger)  # the caller's progress, else this module's log
    say = RunLog(tmp / "logs" / "run.log", said, log_lines)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    status = {"run_id": context.get("run_id", run_dir.name), "job": job.name,
              "model": job.model.kind, "started_at": started_at, "run_dir": str(run_dir)}
    try:
        paths = [str(p) for p in shard_paths or ()]
        if not paths and job.data.path_url is None:
            raise BatchError(f"job {job.name!r}: no shards to process (empty corpus)")
        if context.get("job_path"):
            copy_atomic(Path(context["job_path"]), tmp / "job.yaml")
        if job.results is not None:  # before any training: a typo costs seconds, not a run
            results.check(job.results, status)
        with client.as_current(), performance_report(filename=str(tmp / "performance.html")):
            metrics, model = _run(client, job, paths, say, shard_hosts)
        # input files the control machine left out (data.on_error: skip), from the context
        metrics["skipped_files"] = len(context.get("skipped_files") or ()) \
            + len(metrics.get("skipped_objects") or ())
        metrics["started_at"] = started_at
        metrics["duration_s"] = round(time.perf_counter() - t0, 3)
        if context:
            metrics["context"] = _json_safe(context)
        if watch is not None:
            metrics["cluster_events"] = status["cluster_events"] = _json_safe(watch.summary())
        write_atomic(tmp / "model.joblib", lambda f: save_model(f, model))
        write_json_atomic(tmp / "metrics.json", metrics)
        write_text_atomic(tmp / "report.html", render_report(metrics))
        status.update(status="succeeded", duration_s=metrics["duration_s"],
                      n_workers=metrics["n_workers"], accuracy=metrics["accuracy"],
                      macro_f1=metrics["macro_f1"], error=None)
        write_json_atomic(tmp / STATUS_FILE, status)
        tmp.rename(run_dir)
    except BaseException as e:
        # project errors as they are; the expected failures of I/O and data become a
        # BatchError; anything else (a bug, Ctrl-C) is recorded and propagates unchanged
        error = e if isinstance(e, DaskfleetError) else _as_batch_error(job, e)
        if watch is not None:
            error = watch.explain(e) or error
            status["cluster_events"] = _json_safe(watch.summary())
        _record_failure(tmp, run_dir, status, error or e, say, time.perf_counter() - t0)
        if job.results is not None and run_dir.is_dir() and \
                not str(error or e).startswith("results.path"):
            # the failed run's folder (its logs, its error) goes where the team looks too
            with contextlib.suppress(BatchError):
                results.publish(run_dir, status, job.results, said)
        if error is None or error is e:
            raise
        raise error from e
    finally:
        # the futures of a failed run go out of scope here, and the scheduler forgets them
        shutil.rmtree(tmp, ignore_errors=True)
    if job.results is not None:
        results.publish(run_dir, status, job.results, said)
    return metrics


def _as_batch_error(job: JobSpec, e: BaseException) -> BatchError | None:
    if isinstance(e, (OSError, ValueError, TypeError, RuntimeError, MemoryError)):
        return BatchError(f"job {job.name!r} failed: {type(e).__name__}: {e}")
    return None


def _record_failure(tmp: Path, run_dir: Path, status: dict, error: BaseException, say: RunLog,
                    seconds: float) -> None:
    """Turn the half-written run folder into a failed run: status, logs, and no results."""
    try:
        cancelled = interruption(error)
        message = cancelled or (str(error) if isinstance(error, DaskfleetError) else
                                f"{type(error).__name__}: {error}" if str(error)
                                else type(error).__name__)
        say(message if cancelled else f"failed: {message}")
        for name in SUCCESS_FILES:
            (tmp / name).unlink(missing_ok=True)
        status.update(status="cancelled" if cancelled else "failed", error=message,
                      duration_s=round(seconds, 3))
        write_json_atomic(tmp / STATUS_FILE, status)
        tmp.rename(run_dir)
    except OSError as e:  # recording must not hide the original error
        say(f"could not record the failed run in {run_dir}: {e}")


def _release(futures: Sequence[Future]) -> None:
    # release, not cancel: cancelling would also cancel the finished tasks' dependents
    for f in futures:
        f.release()


def _run(client: Client, job: JobSpec, paths: list[str], say: Say,
         shard_hosts: Sequence[Sequence[str]] | None = None) -> tuple[dict, dict]:
    clean_params = job.clean_params()
    split_params = job.split_params()
    vectorizer_params = job.vectorizer_params()
    model_params = job.model_params()
    timings: dict[str, float] = {}
    workers_info = joined_workers(client)
    n_workers = len(workers_info)
    if n_workers == 0:
        raise BatchError("the cluster has no workers; check `daskfleet status`")

    cache = bool(vectorizer_params.get("cache", True))
    cleaned: list[Future] = []
    workers = _workers(client)
    # shards: paths on the worker hosts, or (a corpus read where it lives) the futures of the
    # partitions the workers read and dealt; a pass without the cache rebuilds from either
    shards: list = list(paths)
    extra: dict[str, Any] = {}
    if job.data.path_url is not None:
        t0 = time.perf_counter()
        loaded = store_load.load(client, job.data, workers, split_params["seed"], say)
        shards, paths = loaded.partitions, loaded.names(job.data.path_url)
        extra = {"data_objects": loaded.objects, "data_bytes": loaded.bytes,
                 "skipped_objects": loaded.skipped}
        timings["read"] = time.perf_counter() - t0
        say(f"read: {loaded.rows:,} rows dealt into {len(shards)} partitions on the workers "
            f"({timings['read']:.1f}s)")
    if cache:
        # load: one task per shard, on the workers
        t0 = time.perf_counter()
        # shard i on worker i mod W: training later streams each worker's own shards in place
        if job.data.path_url is None:
            # a shard on some hosts only (data.copies) is read there and nowhere else: a loose
            # restriction would let an idle worker elsewhere steal the read, and fail it; with
            # its hosts all gone, the scheduler's no-workers-timeout fails it
            raw = [client.submit(parts.read_shard, p, pure=False,
                                 **({"workers": list(shard_hosts[i])} if shard_hosts else
                                    {"workers": [workers[i % len(workers)]],
                                     "allow_other_workers": True}))
                   for i, p in enumerate(paths)]
            _check(raw, "load", paths, bar=True)
        else:
            raw = shards
        timings["load"] = time.perf_counter() - t0
        say(f"load: {len(paths)} shards on {n_workers} workers ({timings['load']:.1f}s)")

        # clean: drop rows without text or label, assign the split, clean (partition i on
        # worker i mod W, where the training groups it)
        t0 = time.perf_counter()
        cleaned = [client.submit(parts.clean_part, r, clean_params=clean_params,
                                 split_params=split_params, pure=False,
                                 workers=[workers[i % len(workers)]], allow_other_workers=True)
                   for i, r in enumerate(raw)]
        _check(cleaned, "clean", paths, bar=True)
        stats_f = client.map(parts.part_stats, cleaned, pure=False)
        _check(stats_f, "clean", paths)
        stats = client.gather(stats_f)
        _release(stats_f)
        _release(raw)
        timings["clean"] = time.perf_counter() - t0
    else:
        # load and clean in one task per shard that returns only the counts (no data kept)
        t0 = time.perf_counter()
        stats_f = client.map(parts.shard_stats, shards, clean_params=clean_params,
                             split_params=split_params, pure=False)
        _check(stats_f, "load and clean", paths, bar=True)
        stats = client.gather(stats_f)
        _release(stats_f)
        timings["load"] = 0.0
        timings["clean"] = time.perf_counter() - t0
        say(f"load: {len(paths)} shards on {n_workers} workers, read and cleaned in one pass "
            "(features.cache: false, nothing kept)")
    if split_params.get("stratify"):
        split_params, resplit = _stratify(client, stats, split_params, clean_params,
                                          cleaned if cache else None, shards)
        if cache:
            assert resplit is not None, "_stratify returns the partitions it is given"
            cleaned = resplit
    rows = sum(s["rows"] for s in stats)
    dropped = sum(s["dropped"] for s in stats)
    train_labels: Counter = Counter()
    test_labels: Counter = Counter()
    for s in stats:
        train_labels.update(s["train_labels"])
        test_labels.update(s["test_labels"])
    n_train, n_test = sum(train_labels.values()), sum(test_labels.values())
    say(f"clean: {rows:,} rows, {dropped:,} dropped (no text or label), "
        f"{n_train:,} train / {n_test:,} test ({timings['clean']:.1f}s)")
    if n_train == 0:
        raise BatchError(
            f"job {job.name!r}: empty corpus: no training rows with both text and label "
            f"({rows} rows read, {dropped} without text or label, {n_test} in the test split)"
        )
    if len(train_labels) < 2:
        only = next(iter(train_labels))
        raise BatchError(
            f"job {job.name!r}: the training rows have one class only ({only!r}); a classifier "
            "needs at least two labels"
        )
    if n_test == 0:
        raise BatchError(
            f"job {job.name!r}: the test split is empty ({n_train} training rows); use more "
            "data or a larger split.test_fraction"
        )
    # the model knows the training split's classes only; the evaluation counts every label of
    # the test rows too (a test-only label is a row the model gets wrong, never a class of it)
    classes = sorted(c for c, n in train_labels.items() if n > 0)
    labels = sorted(set(classes) | set(test_labels))
    warnings = []
    test_only = sorted(set(test_labels) - set(train_labels))
    if test_only:
        # kept (the test set stays whole and honest), but the model can never predict them
        warnings.append(
            f"label(s) {', '.join(map(repr, test_only))} occur only in the test split "
            f"({sum(test_labels[c] for c in test_only)} rows): the model cannot predict them and "
            "their recall is 0; add training rows for them, or change split.seed or "
            "split.test_fraction, or set split.stratify: true")
    vectorizer_params, note, warn = features.resolve_analyzer(
        vectorizer_params, sum(s["unspaced_texts"] for s in stats),
        sum(s["sampled_texts"] for s in stats))
    if note is not None and warn:
        warnings.append(note)
    elif note:
        say(f"note: {note}")
    for warning in warnings:
        say.warning(f"warning: {warning}")
    model_params["class_weight"] = _class_weights(job, train_labels)
    _check_model_fits(job, len(classes), [w.get("memory_limit") or 0
                                          for w in workers_info.values()],
                      max((w.get("nthreads") or 1 for w in workers_info.values()), default=1))

    # vectorize: the feature matrices are built and kept on the workers (with the cache), or
    # only the tf-idf document frequencies are counted (without: every pass hashes again)
    t0 = time.perf_counter()
    idf = None
    if cache:
        vec = client.map(parts.vectorize_part, cleaned, vectorizer_params=vectorizer_params,
                         pure=False)
        _check(vec, "vectorize", paths, bar=True)
        _release(cleaned)
        # with a search, the idf weights are computed after it: the search's own come from its
        # fitting rows only, never from the validation rows it scores on
        if vectorizer_params.get("tfidf") and job.search is None:
            vec, idf = _tfidf(client, _Parts(client, vec=vec), vectorizer_params["norm"], paths)
        source = _Parts(client, vec=vec)
    else:
        load_params = {"clean": clean_params, "split": split_params,
                       "vectorizer": vectorizer_params}
        source = _Parts(client, paths=shards, load_params=load_params)
        if vectorizer_params.get("tfidf"):
            _, idf = _tfidf(client, source, vectorizer_params["norm"], paths, apply=False)
            source = _Parts(client, paths=shards, load_params=load_params, idf=idf)
    timings["vectorize"] = time.perf_counter() - t0
    say(f"vectorize: {vectorizer_params['n_features']:,} hashed features, "
        f"{vectorizer_params['analyzer']} ngrams {tuple(vectorizer_params['ngram_range'])}"
        f"{'' if cache else ', rebuilt in every pass (features.cache: false)'} "
        f"({timings['vectorize']:.1f}s)")

    # train (on the training rows; with a search, first pick the parameters on a validation split)
    t0 = time.perf_counter()
    part_rows = [sum(s["train_labels"].values()) for s in stats]
    search = None
    if job.search is not None:
        tfidf_norm = vectorizer_params["norm"] if vectorizer_params.get("tfidf") else None
        search = _search(client, job, model_params, source, classes, paths, say, tfidf_norm,
                         sum(part_rows))
        model_params = {**model_params, **search["best"]}
        if vectorizer_params.get("tfidf"):  # now from all the training rows, for the final fit
            vec, idf = _tfidf(client, source, vectorizer_params["norm"], paths)
            source = _Parts(client, vec=vec)
    fitted, averaged_rows = _train(client, job.model.kind, model_params, source, part_rows,
                                   classes, paths, say, vectorizer_params["n_features"])
    timings["train"] = time.perf_counter() - t0

    # evaluate: a confusion matrix per partition, summed on the client (k x k integers)
    t0 = time.perf_counter()
    cm, scores = _evaluate(client, fitted, source, labels, "evaluate")
    timings["evaluate"] = time.perf_counter() - t0
    say(f"evaluate: accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}, "
        f"majority class {scores['majority_rate']:.3f} ({timings['evaluate']:.1f}s)")

    # save: the classifier comes to the client once
    t0 = time.perf_counter()
    clf = fitted.result()
    idf_weights = None if idf is None else idf.result()
    _release([*source.futures(), fitted, *([idf] if idf is not None else []),
              *(f for f in shards if isinstance(f, Future))])
    model = {
        **model_stamp(),
        "vectorizer": vectorizer_params,
        "clean": clean_params,
        "classifier": clf,
        "labels": [str(c) for c in clf.classes_],
        "job": job.name,
        "idf": idf_weights,
    }
    timings["save"] = time.perf_counter() - t0
    say(f"save: classifier collected ({timings['save']:.1f}s)")

    metrics = {
        "job": job.name,
        "model": job.model.kind,
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "majority_rate": scores["majority_rate"],
        "n_train": n_train,
        "n_test": n_test,
        "n_classes": len(classes),
        "model_classes": list(classes),
        "n_workers": n_workers,
        # parameter mixing: how many models were mixed each epoch (fewer than the workers when
        # the training rows are few: at least train.MIN_MODEL_ROWS a model)
        "mixed_models": (len(source.mixing_groups(n_train)) if job.model.kind == "sgd"
                         else None),
        # average (ASGD): the rows whose batches' weights the model averages (None: not averaged)
        "averaged_rows": averaged_rows,
        "n_partitions": len(paths),
        "rows": rows,
        "dropped_rows": dropped,
        "epochs": job.model.epochs,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "labels": list(labels),
        "per_class": scores["per_class"],
        "confusion_matrix": cm.tolist(),
        "params": {"clean": clean_params, "features": vectorizer_params,
                   "split": {k: v for k, v in split_params.items() if k != "thresholds"},
                   "model": _json_safe(model_params)},
    }
    metrics.update(extra)
    if search is not None:
        metrics["search"] = search
    if warnings:
        metrics["warnings"] = warnings
    return metrics, model


class _Parts:
    """The partitions a pass runs over: futures of the cached feature matrices (``vec``), or,
    without the cache, the shard paths, each rebuilt inside the task that uses it
    (``parts.on_shard``, with the idf weights when given)."""

    def __init__(self, client: Client, vec: Sequence[Future] | None = None,
                 paths: Sequence[str] | None = None, load_params: dict | None = None,
                 idf: Future | None = None):
        self.client, self.vec = client, vec
        self.paths: Sequence[str] = paths if paths is not None else ()
        self.load_params, self.idf = load_params, idf

    def __len__(self) -> int:
        return len(self.vec if self.vec is not None else self.paths)

    def submit(self, func: Callable, i: int, *args: Any) -> Future:
        """``func(partition i, *args)`` as a task."""
        if self.vec is not None:
            return self.client.submit(func, self.vec[i], *args, pure=False)
        return self.client.submit(parts.on_shard, func, self.paths[i], self.load_params,
                                  self.idf, *args, pure=False)

    def map(self, func: Callable, *args: Any) -> list[Future]:
        return [self.submit(func, i, *args) for i in range(len(self))]

    def by_worker(self, max_groups: int | None = None) -> list[tuple[str, list[int]]]:
        """Partition i belongs to worker i mod W (workers sorted by address): where `_run` placed
        its shard when it loaded it (with the cache), or where it is rebuilt (without). The same
        groups either way, so both give the same model, bit for bit."""
        workers = _workers(self.client)
        if not workers:
            raise BatchError("the cluster has no workers any more; check `daskfleet status` and "
                             "the worker logs")
        # with ``max_groups``, that many groups on the first workers (partitions then move)
        workers = workers[:max_groups] if max_groups else workers
        groups = [(w, list(range(j, len(self), len(workers)))) for j, w in enumerate(workers)]
        return [(w, idx) for w, idx in groups if idx]

    def mixing_groups(self, n_rows: int) -> list[tuple[str, list[int]]]:
        """The groups parameter mixing trains one model on each: one per worker, but no more
        than leave every model ``train.MIN_MODEL_ROWS`` of the ``n_rows`` training rows."""
        return self.by_worker(max_groups=max(1, n_rows // train.MIN_MODEL_ROWS))

    def submit_group(self, func: Callable, worker: str, indices: list[int], *args: Any) -> Future:
        """``func(those partitions, *args)`` as one task on ``worker``, where they are (another
        worker takes it if that one is lost: the partitions are then recomputed)."""
        where = {"workers": [worker], "allow_other_workers": True, "pure": False}
        if self.vec is not None:
            return self.client.submit(func, [self.vec[i] for i in indices], *args, **where)
        return self.client.submit(parts.on_shards, func, [self.paths[i] for i in indices],
                                  self.load_params, self.idf, *args, **where)

    def futures(self) -> list[Future]:
        """What this holds on the cluster (to release at the end)."""
        return list(self.vec) if self.vec is not None else []


def _workers(client: Client) -> list[str]:
    return sorted(joined_workers(client))


def _tree_reduce(client: Client, futures: Sequence[Future], func: Callable,
                 fan_in: int = 8, root: Callable | None = None,
                 root_args: Sequence = ()) -> tuple[Future, list[Future]]:
    """``func(*inputs)`` in a tree over the futures, on the workers (no input waits for all the
    others, and no node holds more than ``fan_in`` of them). The last node is
    ``root(*root_args, *inputs)`` (``func`` by default), so a reduction that ends in another
    step ends in the same task. Returns the root and every node."""
    level, nodes = list(futures), []
    while len(level) > fan_in:
        level = [client.submit(func, *level[i:i + fan_in], pure=False)
                 for i in range(0, len(level), fan_in)]
        nodes += level
    # one input still goes through a node, so the root always has the reduction's shape
    top = client.submit(root or func, *root_args, *level, pure=False)
    return top, [*nodes, top]


def _tfidf(client: Client, source: _Parts, norm: str | None, paths: list[str],
           apply: bool = True):
    """Document frequencies reduced over all partitions, idf weights, applied everywhere (with
    ``apply``; otherwise only the idf weights, and the partitions are left as they are)."""
    freqs = source.map(parts.train_frequencies)
    _check(freqs, "vectorize (document frequencies)", paths)
    total, level = _tree_reduce(client, freqs, features.add_frequencies)
    idf = client.submit(features.idf_weights, total, pure=False)
    weighted = None
    if apply:
        assert source.vec is not None, "tf-idf is applied to cached partitions only"
        weighted = client.map(parts.tfidf_part, source.vec, idf=idf, norm=norm, pure=False)
        _check(weighted, "vectorize (tf-idf)", paths)
        _release(source.futures())
    else:
        _check([idf], "vectorize (idf weights)")
    _release([*freqs, *level])
    return weighted, idf


def _evaluate(client: Client, fitted: Future, source: _Parts, classes: list[str],
              phase: str) -> tuple:
    cms = [source.submit_group(evaluate.confusion_parts, worker, idx, fitted, classes)
           for worker, idx in source.by_worker()]
    _check(cms, phase)
    cm = sum(client.gather(cms))
    _release(cms)
    return cm, evaluate.metrics_from_confusion(cm, classes)


def _train(client: Client, kind: str, model_params: dict, source: _Parts,
           part_rows: list[int], classes: list[str], paths: list[str], say: Say,
           n_features: int) -> tuple[Future, int | None]:
    """A future of the fitted scikit-learn classifier (it stays on a worker), and with
    ``average`` the rows its averaged weights cover."""
    n_train = sum(part_rows)
    if kind == "naive_bayes":
        te = time.perf_counter()
        [fitted] = _naive_bayes(client, source, classes, model_params["variant"],
                                [model_params["alpha"]], paths)
        say(f"train: naive Bayes ({model_params['variant']}) counts of {n_train:,} rows summed "
            f"over {len(source)} partitions ({time.perf_counter() - te:.1f}s)")
        return fitted, None
    sgd_params = _sgd_params(model_params)
    epochs = int(model_params["epochs"])
    if kind == "incremental":
        from runner.batch.incremental import fit_incremental

        if source.vec is None:  # the job validation refuses incremental without the cache
            raise BatchError("model.kind incremental needs features.cache: true")
        vec = source.vec

        epoch_t0 = [time.perf_counter()]

        def on_epoch(epoch: int) -> None:
            say(f"train: epoch {epoch + 1}/{epochs} {n_train:,} rows, sequential over "
                f"{len(vec)} partitions (dask-ml Incremental) "
                f"({time.perf_counter() - epoch_t0[0]:.1f}s)")
            epoch_t0[0] = time.perf_counter()

        try:
            clf = fit_incremental(vec, part_rows, n_features, classes, sgd_params, epochs, on_epoch)
        except (ValueError, TypeError, RuntimeError) as e:
            raise BatchError(f"train (incremental) failed: {type(e).__name__}: {e}") from e
        return client.scatter(clf), None
    [state] = _parameter_mixing(client, source, classes, [sgd_params], epochs, paths, say,
                                n_train)
    fitted = client.submit(train.make_classifier, state, classes, sgd_params, pure=False)
    _check([fitted], "train (final weights)")
    averaged = None
    if train.average_start(sgd_params["average"]) is not None:
        averaged, counted = client.submit(train.averaged_rows, state, pure=False).result()
        if averaged:
            say(f"train: averaged SGD: the model is the mean of the weights after each batch "
                f"over {averaged:,} rows")
        else:
            say.warning(f"train: WARNING: average: {sgd_params['average']} starts after more "
                        f"rows than the schedule counted ({counted:,}: the furthest worker's "
                        "rows over every epoch): nothing was averaged, the model has the plain "
                        "weights")
    _release([state])
    return fitted, averaged


def _check_model_fits(job: JobSpec, n_classes: int, limits: list[int],
                      threads: int = 1) -> None:
    """Refuse, before any feature or training task, a model that cannot fit in the smallest
    worker's memory limit at its peak, as its kind needs it (``memory.model_memory``; ``limits``:
    the workers', 0 for none; a worker restarted in a loop is the alternative)."""
    if not limits or min(limits) == 0:  # no limit set: nothing to check against
        return
    limit = min(limits)
    n_features = job.features.n_features
    candidates = len(job.search.candidates()) if job.search is not None else 1
    mem = memory.model_memory(job.model.kind, n_classes, candidates, threads,
                              average=job.model.average is not False)
    need = mem.need(n_features)
    if need <= train.MEMORY_BUDGET * limit:
        return
    fits = memory.largest_fitting(mem, limit)
    hint = (f"features.n_features: {fits:,} fits" if fits else
            "no n_features fits: fewer classes or more memory")
    what = (f"job {job.name!r}: training needs about {need / 2**30:.2f} GiB on every worker "
            f"({mem.rows} {'classes' if mem.rows > 1 else 'row'} x {n_features:,} features x "
            f"{mem.value_bytes} bytes = {mem.copy_bytes(n_features) / 2**30:.2f} GiB per copy, "
            f"{mem.what})")
    raise ModelTooLarge(
        f"{what}, more than {int(train.MEMORY_BUDGET * 100)} % of the workers' memory limit of "
        f"{limit / 2**30:.2f} GiB. Lower features.n_features ({hint}) or raise the workers' "
        "memory limit; nothing was trained.", need=what, limit=limit, fits=fits)


# inputs of one mixing node: each is a k x n_features weight matrix the node's worker holds at
# once (train.TRAINING_COPIES counts them)
MIX_FAN_IN = 3


def _sgd_params(model_params: dict) -> dict:
    """The SGDClassifier parameters of the model section (``class_weight`` already resolved to
    label -> weight by ``_class_weights``)."""
    return {"loss": model_params["loss"], "alpha": model_params["alpha"],
            "random_state": model_params["seed"],
            "learning_rate": model_params.get("learning_rate", "optimal"),
            "eta0": model_params.get("eta0", 0.01), "power_t": model_params.get("power_t", 0.5),
            "class_weight": model_params.get("class_weight"),
            "average": model_params.get("average", False)}


def _stratify(client: Client, stats: list[dict], split_params: dict, clean_params: dict,
              cleaned: list[Future] | None, shards: Sequence) -> tuple[dict, list | None]:
    """A stratified split: every label of at most ``split.STRATIFY_MAX_ROWS`` rows gets its own
    hash threshold, so its share of test rows is ``test_fraction`` (a label of 2-4 rows gets one
    test row, one of a single row trains). Only the partitions holding such a label are asked,
    and only those labels' hashes reach the client (without the cache, those partitions are
    read once more). ``stats`` are updated in place to the new split. Returns the split
    parameters with the thresholds, and the cleaned partitions, those with a small label split
    again (when ``cleaned`` is given; without the cache, every rebuild applies the thresholds)."""
    small = split.small_labels(stats)
    wanted = set(small)
    where = [i for i, s in enumerate(stats)
             if wanted.intersection(s["train_labels"]) or wanted.intersection(s["test_labels"])]
    if not where:
        return split_params, cleaned
    if cleaned is not None:
        hashes_f = [client.submit(parts.label_hashes, cleaned[i], small, pure=False)
                    for i in where]
    else:
        hashes_f = [client.submit(parts.shard_label_hashes, shards[i], clean_params,
                                  split_params, small, pure=False) for i in where]
    _check(hashes_f, "split (stratified)")
    hashes = client.gather(hashes_f)
    _release(hashes_f)
    thresholds = split.stratified_thresholds(hashes, split_params["test_fraction"])
    for i, part in zip(where, hashes, strict=True):
        for lab, h in part.items():
            test = int((h < thresholds[lab]).sum())
            for key, n in (("test_labels", test), ("train_labels", len(h) - test)):
                if n:
                    stats[i][key][lab] = n
                else:
                    stats[i][key].pop(lab, None)
    out = {**split_params, "thresholds": thresholds}
    if cleaned is None:
        return out, None
    resplit = list(cleaned)
    for i in where:
        resplit[i] = client.submit(parts.with_thresholds, cleaned[i], out, pure=False)
    _check([resplit[i] for i in where], "split (stratified)")
    _release([cleaned[i] for i in where])
    return out, resplit


def _class_weights(job: JobSpec, train_labels: Counter) -> dict[str, float] | None:
    """``model.class_weight`` as label -> weight: "balanced" from the training split's label
    counts, as scikit-learn computes it (n_rows / (n_classes x rows of the class)); a mapping
    as given, once its labels are checked against the training labels."""
    wanted = job.model.class_weight
    if wanted is None:
        return None
    present = {c: n for c, n in train_labels.items() if n > 0}
    if wanted == "balanced":
        total = sum(present.values())
        return {c: total / (len(present) * n) for c, n in sorted(present.items())}
    unknown = sorted(set(wanted) - set(present))
    if unknown:
        raise BatchError(
            f"job {job.name!r}: model.class_weight names label(s) {', '.join(map(repr, unknown))} "
            f"that have no training rows (labels: {', '.join(map(repr, sorted(present)))}); fix "
            "the job file's model.class_weight.")
    return dict(wanted)


def _parameter_mixing(client: Client, source: _Parts, classes: list[str],
                      candidates: list[dict], epochs: int, paths: list[str], say: Progress,
                      n_train: int) -> list[Future]:
    """Iterative parameter mixing with one model per worker per epoch (``train``'s docstring),
    for every parameter set in ``candidates`` at once (their tasks run side by side). Returns
    the final weight states.

    Every epoch's tasks are submitted up front: an epoch starts on a worker as soon as the mixed
    state it needs exists, not after a round trip through the client. The client keeps only
    each epoch's states, to report progress and to hold the last ones; the scheduler keeps an
    intermediate result until the tasks that need it have run.

    Each mixed model trains on at least ``train.MIN_MODEL_ROWS`` rows an epoch: with fewer, the
    mix falls behind one process (``bench/workers.py --min-model-rows 1``), so a small corpus
    trains fewer models than there are workers, and says so."""
    groups = source.mixing_groups(n_train)
    n_workers = len(source.by_worker())
    if len(groups) < n_workers:
        say(f"train: {len(groups)} model(s) mixed on {len(groups)} of {n_workers} workers: "
            f"{n_train:,} training rows make at most {len(groups)} model(s) of "
            f"{train.MIN_MODEL_ROWS:,} rows or more (fewer rows a model cost accuracy)")
    states: Sequence[Future | None] = [None] * len(candidates)
    per_epoch: list[list[Future]] = []
    for epoch in range(epochs):
        new_states = []
        for state, params in zip(states, candidates, strict=True):
            results = [source.submit_group(train.train_partitions, worker, idx, state, classes,
                                           params, epoch, g)
                       for g, (worker, idx) in enumerate(groups)]
            mixed, _ = _tree_reduce(client, results, train.mix_sum, fan_in=MIX_FAN_IN,
                                    root=train.mix_finish, root_args=(epoch,))
            new_states.append(mixed)
        per_epoch.append(new_states)
        states = new_states
    what = f"{len(candidates)} candidates, " if len(candidates) > 1 else ""
    te = time.perf_counter()
    for epoch, epoch_states in enumerate(per_epoch):
        _check(epoch_states, f"train (epoch {epoch + 1})")
        if epoch > 0:
            _release(per_epoch[epoch - 1])
        say(f"train: epoch {epoch + 1}/{epochs} {what}{n_train:,} rows in {len(source)} partitions "
            f"on {len(groups)} workers ({time.perf_counter() - te:.1f}s)")
        te = time.perf_counter()
    return per_epoch[-1]


def _naive_bayes(client: Client, source: _Parts, classes: list[str], variant: str,
                 alphas: list[float], paths: list[str]) -> list[Future]:
    counts = source.map(naive_bayes.class_feature_counts, classes)
    _check(counts, "train (naive Bayes counts)", paths)
    total, nodes = _tree_reduce(client, counts, naive_bayes.add_counts, fan_in=4)
    fitted = [client.submit(naive_bayes.naive_bayes_from_counts, total, classes, variant, a,
                            pure=False) for a in alphas]
    _check(fitted, "train (naive Bayes)")
    _release([*counts, *nodes])
    return fitted


def _search(client: Client, job: JobSpec, base: dict, source: _Parts, classes: list[str],
            paths: list[str], say: Say, tfidf_norm: str | None = None,
            n_train: int = 0) -> dict:
    """Fit every grid candidate on the training rows minus a validation split (carved by the
    text hash), in parallel; score each on the validation rows; best by macro-F1. With
    ``tfidf_norm`` (tf-idf on; ``source`` holds raw counts), the search's idf weights come from
    its fitting rows only, as the final model's come from the training rows only."""
    spec = job.search
    assert spec is not None, "called for a job with search: only"
    t0 = time.perf_counter()
    candidates = spec.candidates()
    if source.vec is None:  # the job validation refuses a search without the cache
        raise BatchError("search needs features.cache: true")
    fit_parts = client.map(parts.carve_validation, source.vec, fraction=spec.validation_fraction,
                           seed=job.split.seed, pure=False)
    _check(fit_parts, "search (validation split)", paths)
    if tfidf_norm is not None:
        fit_parts, idf = _tfidf(client, _Parts(client, vec=fit_parts), tfidf_norm, paths)
        _release([idf])
    fit_source = _Parts(client, vec=fit_parts)
    if job.model.kind == "naive_bayes":
        fitted = _naive_bayes(client, fit_source, classes, base["variant"],
                              [c.get("alpha", base["alpha"]) for c in candidates], paths)
    else:
        params = [_sgd_params({**base, **c}) for c in candidates]
        fit_rows = round(n_train * (1 - spec.validation_fraction))
        states = _parameter_mixing(client, fit_source, classes, params, job.model.epochs, paths,
                                   lambda line: None, fit_rows)
        fitted = [client.submit(train.make_classifier, s, classes, p, pure=False)
                  for s, p in zip(states, params, strict=True)]
        _check(fitted, "search (final weights)")
        _release(states)
    results = []
    for cand, f in zip(candidates, fitted, strict=True):
        _, scores = _evaluate(client, f, fit_source, classes, "search (validation)")
        results.append({"params": cand, "macro_f1": scores["macro_f1"],
                        "accuracy": scores["accuracy"]})
    _release([*fitted, *fit_parts])
    best = max(results, key=lambda r: r["macro_f1"])
    say(f"search: {len(candidates)} candidates on a {spec.validation_fraction:.0%} validation "
        f"split; best {best['params']} macro-F1 {best['macro_f1']:.3f} "
        f"({time.perf_counter() - t0:.1f}s)")
    return {"validation_fraction": spec.validation_fraction, "results": results,
            "best": best["params"], "best_macro_f1": best["macro_f1"]}


__all__ = ["run_job"]
