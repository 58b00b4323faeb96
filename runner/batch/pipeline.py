"""Control side: run a job's batch on a Dask cluster and write the run folder.

Phases: load -> clean -> vectorize -> train -> evaluate -> save. Every per-row step runs on the
workers as a task per shard (``client.map``), each phase waits for its tasks so that it can be
timed, and the vectorized partitions stay on the workers (futures) for all epochs and for the
evaluation. The client only ever holds small things: row and label counts, confusion matrices,
and at the end the model's weights.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed import Future, wait
from distributed.client import FuturesCancelledError

from runner.batch import evaluate, parts, train
from runner.batch.model import save_model
from runner.errors import BatchError, DaskfleetError

if TYPE_CHECKING:
    from distributed import Client

    from runner.batch.job import JobSpec

Progress = Callable[[str], None]


def print_progress(line: str) -> None:
    print(f"[daskfleet] {line}", file=sys.stderr, flush=True)


def _check(futures: Sequence[Future], phase: str, paths: Sequence[str] | None = None) -> None:
    """Wait for ``futures``; the first failed task becomes a BatchError naming phase and shard."""
    try:
        wait(list(futures))
    except FuturesCancelledError as e:  # a worker or the scheduler dropped the tasks
        raise BatchError(f"{phase} failed: the cluster cancelled its tasks ({e}); check "
                         "`daskfleet status` and the worker logs") from e
    for i, f in enumerate(futures):
        if f.status == "error":
            exc = f.exception()
            where = f" on shard {paths[i]}" if paths is not None and i < len(paths) else ""
            raise BatchError(
                f"{phase} failed{where}: {type(exc).__name__}: {exc}"
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
) -> dict:
    """Run ``job`` on the cluster behind ``client`` over the shards at ``shard_paths``.

    ``shard_paths`` are paths as seen on the worker hosts; the client never opens them. Writes
    ``metrics.json`` and ``model.joblib`` into ``run_dir`` (through ``<run_dir>.tmp``, renamed at
    the end, so a failed run leaves no run folder) and returns the metrics.
    """
    say = progress or print_progress
    run_dir = Path(run_dir)
    if run_dir.exists():
        raise BatchError(f"run folder {run_dir} already exists; choose another run id")
    paths = [str(p) for p in shard_paths]
    if not paths:
        raise BatchError(f"job {job.name!r}: no shards to process (empty corpus)")
    tmp = run_dir.with_name(run_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        metrics = _run(client, job, paths, tmp, say)
        if context is not None:
            metrics["context"] = _json_safe(context)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        tmp.rename(run_dir)
        return metrics
    except DaskfleetError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError, MemoryError) as e:
        raise BatchError(f"job {job.name!r} failed: {type(e).__name__}: {e}") from e
    finally:
        # the futures of a failed run go out of scope here, and the scheduler forgets them
        shutil.rmtree(tmp, ignore_errors=True)


def _release(futures: Sequence[Future]) -> None:
    # release, not cancel: cancelling would also cancel the finished tasks' dependents
    for f in futures:
        f.release()


def _run(client: Client, job: JobSpec, paths: list[str], out: Path, say: Progress) -> dict:
    clean_params = job.clean_params()
    split_params = job.split_params()
    vectorizer_params = job.vectorizer_params()
    sgd_params = job.sgd_params()
    timings: dict[str, float] = {}
    n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
    if n_workers == 0:
        raise BatchError("the cluster has no workers; check `daskfleet status`")

    # load: one task per shard, on the workers
    t0 = time.perf_counter()
    raw = client.map(parts.read_shard, paths, pure=False)
    _check(raw, "load", paths)
    timings["load"] = time.perf_counter() - t0
    say(f"load: {len(paths)} shards on {n_workers} workers ({timings['load']:.1f}s)")

    # clean: drop rows without text or label, assign the split, clean
    t0 = time.perf_counter()
    cleaned = client.map(parts.clean_part, raw, clean_params=clean_params,
                         split_params=split_params, pure=False)
    _check(cleaned, "clean", paths)
    stats_f = client.map(parts.part_stats, cleaned, pure=False)
    _check(stats_f, "clean", paths)
    stats = client.gather(stats_f)
    _release(raw)
    timings["clean"] = time.perf_counter() - t0
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
    classes = sorted(set(train_labels) | set(test_labels))

    # vectorize: the feature matrices are built and kept on the workers
    t0 = time.perf_counter()
    vec = client.map(parts.vectorize_part, cleaned, vectorizer_params=vectorizer_params,
                     pure=False)
    _check(vec, "vectorize", paths)
    _release(cleaned)
    timings["vectorize"] = time.perf_counter() - t0
    say(f"vectorize: {vectorizer_params['n_features']:,} hashed features, "
        f"ngrams {tuple(vectorizer_params['ngram_range'])} ({timings['vectorize']:.1f}s)")

    # train: iterative parameter mixing, one mixing step per epoch
    t0 = time.perf_counter()
    epochs = job.model.epochs
    state: Future | None = None
    for epoch in range(epochs):
        te = time.perf_counter()
        results = [
            client.submit(train.train_partition, v, state, classes, sgd_params, epoch, i,
                          pure=False)
            for i, v in enumerate(vec)
        ]
        mixed = client.submit(train.mix, results, state, pure=False)
        _check(results, f"train (epoch {epoch + 1})", paths)
        _check([mixed], f"train (epoch {epoch + 1}, mixing)")
        if state is not None:
            _release([state])
        _release(results)
        state = mixed
        say(f"train: epoch {epoch + 1}/{epochs} {n_train:,} rows in {len(vec)} partitions "
            f"({time.perf_counter() - te:.1f}s)")
    timings["train"] = time.perf_counter() - t0

    # evaluate: a confusion matrix per partition, summed on the client (k x k integers)
    t0 = time.perf_counter()
    cms = [client.submit(evaluate.confusion_part, v, state, classes, sgd_params, pure=False)
           for v in vec]
    _check(cms, "evaluate", paths)
    cm = sum(client.gather(cms))
    scores = evaluate.metrics_from_confusion(cm, classes)
    timings["evaluate"] = time.perf_counter() - t0
    say(f"evaluate: accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}, "
        f"majority class {scores['majority_rate']:.3f} ({timings['evaluate']:.1f}s)")

    # save: the weights come to the client once
    t0 = time.perf_counter()
    final = state.result()
    _release([*vec, *cms, state])
    clf = train.make_classifier(final, classes, sgd_params)
    save_model(out / "model.joblib", {
        "vectorizer": vectorizer_params,
        "clean": clean_params,
        "classifier": clf,
        "labels": list(classes),
        "job": job.name,
    })
    timings["save"] = time.perf_counter() - t0
    say(f"save: model.joblib, metrics.json ({timings['save']:.1f}s)")

    return {
        "job": job.name,
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "majority_rate": scores["majority_rate"],
        "n_train": n_train,
        "n_test": n_test,
        "n_classes": len(classes),
        "n_workers": n_workers,
        "n_partitions": len(paths),
        "rows": rows,
        "dropped_rows": dropped,
        "epochs": epochs,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "labels": list(classes),
        "per_class": scores["per_class"],
        "confusion_matrix": cm.tolist(),
        "params": {"clean": clean_params, "features": vectorizer_params,
                   "split": split_params, "model": job.model.model_dump(mode="json")},
    }


__all__ = ["run_job", "print_progress"]
