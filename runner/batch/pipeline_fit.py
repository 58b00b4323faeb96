"""Control side: what a run fits and scores on the cluster, on partitions ready for it (a
``_Parts``): the tf-idf weights, the classifier (parameter mixing, naive Bayes counts, dask-ml
Incremental), a parameter search, and confusion-matrix evaluation; and the checks of the model
before any of it (its memory on the workers, its class weights).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from distributed import Future

from runner.batch import evaluate, features, memory, naive_bayes, parts, train
from runner.batch.pipeline_tasks import _check, _Parts, _release, _tree_reduce
from runner.errors import BatchError, ModelTooLarge
from runner.log import Progress, Say

if TYPE_CHECKING:
    from distributed import Client

    from runner.batch.job import JobSpec


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
           n_features: int, finish: Callable[[], bool] | None = None
           ) -> tuple[Future, int | None, int]:
    """A future of the fitted scikit-learn classifier (it stays on a worker), with ``average``
    the rows its averaged weights cover, and the epochs it trained (fewer than asked when
    ``finish()`` said so after one: ``runner.batch.finish``)."""
    n_train = sum(part_rows)
    if kind == "naive_bayes":
        te = time.perf_counter()
        [fitted] = _naive_bayes(client, source, classes, model_params["variant"],
                                [model_params["alpha"]], paths)
        say(f"train: naive Bayes ({model_params['variant']}) counts of {n_train:,} rows summed "
            f"over {len(source)} partitions ({time.perf_counter() - te:.1f}s)")
        return fitted, None, 1
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
        return client.scatter(clf), None, epochs
    [state], trained = _parameter_mixing(client, source, classes, [sgd_params], epochs, paths,
                                         say, n_train, finish)
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
    return fitted, averaged, trained


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
                      n_train: int, finish: Callable[[], bool] | None = None
                      ) -> tuple[list[Future], int]:
    """Iterative parameter mixing with one model per worker per epoch (``train``'s docstring),
    for every parameter set in ``candidates`` at once (their tasks run side by side). Returns
    the final weight states and the number of epochs they trained: all of them, unless
    ``finish()`` said to finish after an epoch (the epochs submitted ahead are released).

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
        if finish is not None and epoch + 1 < epochs and finish():
            # released, not cancelled: a cancel would reach this epoch's states through the
            # tasks that depend on them; released, the scheduler forgets what nobody wants
            _release([f for later in per_epoch[epoch + 1:] for f in later])
            say(f"train: finishing early, as asked (`daskfleet runs finish`): the model of epoch "
                f"{epoch + 1}/{epochs} is kept")
            return epoch_states, epoch + 1
    return per_epoch[-1], epochs


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
        fit_parts, idf = _tfidf(client, _Parts(client, vec=fit_parts, holders=source.holders),
                                tfidf_norm, paths)
        _release([idf])
    fit_source = _Parts(client, vec=fit_parts, holders=source.holders)
    if job.model.kind == "naive_bayes":
        fitted = _naive_bayes(client, fit_source, classes, base["variant"],
                              [c.get("alpha", base["alpha"]) for c in candidates], paths)
    else:
        params = [_sgd_params({**base, **c}) for c in candidates]
        fit_rows = round(n_train * (1 - spec.validation_fraction))
        states, _ = _parameter_mixing(client, fit_source, classes, params, job.model.epochs,
                                      paths, lambda line: None, fit_rows)
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
