"""Control side: the phases of one run in order (load, clean, vectorize, train, evaluate,
save), each submitted to the workers and timed; returns the run's metrics and model.

The stratified split, which re-splits the cleaned partitions between clean and vectorize, is
here too: only this sequence uses it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from distributed import Future

from runner.batch import features, parts, split, store_load
from runner.batch.model import model_stamp
from runner.batch.pipeline_fit import (
    _check_model_fits,
    _class_weights,
    _evaluate,
    _search,
    _tfidf,
    _train,
)
from runner.batch.pipeline_tasks import _check, _Parts, _release, _workers, on_holders, owners
from runner.dask_workers import joined_workers
from runner.errors import BatchError
from runner.log import Say

if TYPE_CHECKING:
    from distributed import Client

    from runner.batch.job import JobSpec


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _run(client: Client, job: JobSpec, paths: list[str], say: Say,
         shard_hosts: Sequence[Sequence[str]] | None = None,
         finish: Callable[[], bool] | None = None) -> tuple[dict, dict]:
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
    # the worker each partition trains on: i mod W, or one on a host holding its shard
    own = owners(workers, len(shards), shard_hosts)
    if cache:
        # load: one task per shard, on the workers
        t0 = time.perf_counter()
        if job.data.path_url is None:
            # a shard on some hosts only (data.copies) is read there and nowhere else
            # (``on_holders``); else on its owner, which later trains on it in place
            raw = [client.submit(parts.read_shard, p, pure=False,
                                 **(on_holders(shard_hosts, i) or
                                    {"workers": [own[i]], "allow_other_workers": True}))
                   for i, p in enumerate(paths)]
            _check(raw, "load", paths, bar=True)
        else:
            raw = shards
        timings["load"] = time.perf_counter() - t0
        say(f"load: {len(paths)} shards on {n_workers} workers ({timings['load']:.1f}s)")

        # clean: drop rows without text or label, assign the split, clean (each partition on
        # the worker the training groups it on)
        t0 = time.perf_counter()
        cleaned = [client.submit(parts.clean_part, r, clean_params=clean_params,
                                 split_params=split_params, pure=False,
                                 workers=[own[i]], allow_other_workers=True)
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
        stats_f = [client.submit(parts.shard_stats, p, clean_params=clean_params,
                                 split_params=split_params, pure=False,
                                 **on_holders(shard_hosts, i)) for i, p in enumerate(shards)]
        _check(stats_f, "load and clean", paths, bar=True)
        stats = client.gather(stats_f)
        _release(stats_f)
        timings["load"] = 0.0
        timings["clean"] = time.perf_counter() - t0
        say(f"load: {len(paths)} shards on {n_workers} workers, read and cleaned in one pass "
            "(features.cache: false, nothing kept)")
    if split_params.get("stratify"):
        split_params, resplit = _stratify(client, stats, split_params, clean_params,
                                          cleaned if cache else None, shards, shard_hosts)
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
            vec, idf = _tfidf(client, _Parts(client, vec=vec, holders=shard_hosts),
                              vectorizer_params["norm"], paths)
        source = _Parts(client, vec=vec, holders=shard_hosts)
    else:
        load_params = {"clean": clean_params, "split": split_params,
                       "vectorizer": vectorizer_params}
        source = _Parts(client, paths=shards, load_params=load_params, holders=shard_hosts)
        if vectorizer_params.get("tfidf"):
            _, idf = _tfidf(client, source, vectorizer_params["norm"], paths, apply=False)
            source = _Parts(client, paths=shards, load_params=load_params, idf=idf,
                            holders=shard_hosts)
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
            source = _Parts(client, vec=vec, holders=shard_hosts)
    fitted, averaged_rows, trained = _train(client, job.model.kind, model_params, source,
                                            part_rows, classes, paths, say,
                                            vectorizer_params["n_features"], finish)
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
        "epochs": trained if job.model.kind == "sgd" else job.model.epochs,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "labels": list(labels),
        "per_class": scores["per_class"],
        "confusion_matrix": cm.tolist(),
        "params": {"clean": clean_params, "features": vectorizer_params,
                   "split": {k: v for k, v in split_params.items() if k != "thresholds"},
                   "model": _json_safe(model_params)},
    }
    metrics.update(extra)
    if job.model.kind == "sgd" and trained < job.model.epochs:  # `daskfleet runs finish`
        metrics["finished_early"] = {"epochs_asked": job.model.epochs, "epochs_trained": trained}
    if search is not None:
        metrics["search"] = search
    if warnings:
        metrics["warnings"] = warnings
    return metrics, model


def _stratify(client: Client, stats: list[dict], split_params: dict, clean_params: dict,
              cleaned: list[Future] | None, shards: Sequence,
              shard_hosts: Sequence[Sequence[str]] | None = None) -> tuple[dict, list | None]:
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
                                  split_params, small, pure=False, **on_holders(shard_hosts, i))
                    for i in where]
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
