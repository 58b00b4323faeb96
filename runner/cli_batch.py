"""CLI commands of the batch side: `daskfleet runs`, `runs show|wait|cancel|logs ID`, `predict`.

runner.cli calls ``add_commands(sub)``; the handlers raise project exceptions and runner.cli's
main() turns them into exit codes. Output as in runner.cli: tables, a run's status and a
prediction's summary are data (print); the work's progress is logged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from runner.errors import BatchError, DaskfleetError

DEFAULT_CLUSTER = "clusters/lab.yaml"


def _fmt(value, spec: str = "", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def cmd_runs(args) -> int:
    from runner.jobs import runs

    runs_dir = Path(args.runs_dir)
    if args.runs_cmd == "show":
        details = runs.run_details(runs.get_run(runs_dir, args.id))
        if args.json:
            print(json.dumps(details, indent=2, default=str))
            return 0
        print(f"run {details['id']}: job {details['job']}, {details['status']}, "
              f"started {details['started_at']}, {_fmt(details['duration_s'], '.1f')}s on "
              f"{_fmt(details['n_workers'])} workers")
        if details["error"]:
            print(f"error: {details['error']}")
        m = details["metrics"]
        if m:
            print(f"model {m.get('model', 'sgd')}: accuracy {m['accuracy']:.4f}, macro-F1 "
                  f"{m['macro_f1']:.4f}, majority class {m.get('majority_rate', 0):.4f}; "
                  f"{m['n_train']} train / {m['n_test']} test rows, {m['n_classes']} classes, "
                  f"{m.get('dropped_rows', 0)} dropped rows")
            print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in m["timings"].items()))
        print(f"folder: {details['run_dir']}")
        if details.get("results_url"):
            print(f"results: {details['results_url']}/ (a copy of the folder)")
        for where in details["artifacts"].values():
            copy = f"  (copy: {where['copy']})" if "copy" in where else ""
            print(f"  {where['local']}{copy}")
        return 0
    if args.runs_cmd == "finish":
        return _finish(args, runs_dir)
    if args.runs_cmd in ("wait", "cancel", "logs"):
        return _detached(args, runs_dir)
    rows = runs.list_runs(runs_dir)
    from runner.jobs.detached import FINAL

    for i, r in enumerate(rows):  # detached runs not ended yet: ask their cluster
        if r["status"] not in FINAL:
            from runner.jobs import detached

            try:
                now = detached.refresh(runs_dir, r["id"])
                rows[i] = {**r, **(runs.get_run(runs_dir, r["id"]) if now["status"] in FINAL
                                   else {"status": _queued(now)})}
            except DaskfleetError as e:
                rows[i] = {**r, "status": "unknown", "error": str(e)}
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':40} {'JOB':24} {'STATUS':10} {'ACCURACY':>8} {'MACRO-F1':>8} {'DURATION':>9} "
          f"{'WORKERS':>7} STARTED")
    for r in rows:
        print(f"{r['id']:40} {r['job']:24} {r['status']:10} {_fmt(r['accuracy'], '.4f'):>8} "
              f"{_fmt(r['macro_f1'], '.4f'):>8} {_fmt(r['duration_s'], '.1f') + 's':>9} "
              f"{_fmt(r['n_workers']):>7} {r['started_at'] or '-'}")
    return 0


def _queued(status: dict) -> str:
    ahead = status.get("ahead")
    return f"queued ({len(ahead)} ahead)" if status["status"] == "queued" and ahead \
        else status["status"]


def _finish(args, runs_dir: Path) -> int:
    """Ask a running SGD training to stop after its current epoch and keep its model."""
    from runner.batch import finish
    from runner.cluster import Cluster
    from runner.cluster.activity import running
    from runner.jobs import detached

    cluster_file = args.cluster or detached.locate(runs_dir, args.id).cluster_file
    with Cluster.from_file(cluster_file) as cluster:
        client = cluster.client()
        here = [r.removeprefix("run ") for r in running(client) if r.startswith("run ")]
        if args.id not in here:
            raise BatchError(f"run {args.id} is not running on cluster {cluster.spec.name} "
                             f"({cluster_file}); running there: {', '.join(here) or 'none'}")
        finish.request(client, args.id)
    print(f"run {args.id}: asked to finish after its current epoch; it keeps the model trained "
          "so far, evaluates and saves it (a model kind other than sgd runs to its end)")
    return 0


def _detached(args, runs_dir: Path) -> int:
    from runner.jobs import detached

    if args.runs_cmd == "logs":
        detached.logs(runs_dir, args.id, args.cluster, follow=args.follow)
        return 0
    if args.runs_cmd == "cancel":
        status = detached.cancel(runs_dir, args.id, args.cluster)
    else:
        # data: the run's status each time it changes, plain lines as the last one below
        status = detached.wait(runs_dir, args.id, args.cluster, progress=print,
                               timeout=args.timeout)
    line = f"run {args.id}: {status['status']}"
    if status.get("accuracy") is not None:
        line += f", accuracy {status['accuracy']:.4f}, macro-F1 {status['macro_f1']:.4f}"
    if status.get("error"):
        line += f": {status['error']}"
    print(line)
    print(f"folder: {status.get('run_dir')}")
    return {"succeeded": 0, "cancelled": 130}.get(status["status"], 1)


def cmd_predict(args) -> int:
    from runner.cluster import Cluster
    from runner.jobs.predict import predict_on_cluster
    from runner.log import PREFIX

    with Cluster.from_file(args.cluster) as cluster:
        summary = predict_on_cluster(cluster, Path(args.model), args.data, args.out,
                                     text_column=args.text_column,
                                     label_column=args.label_column, top_k=args.top_k,
                                     proba=args.proba,
                                     storage_options=_storage_options(args.storage_option))
    extra = f", accuracy against the label column {summary['accuracy']:.4f}" \
        if "accuracy" in summary else ""
    if "scores" in summary:
        extra += (", scores are class probabilities" if summary["scores"] == "probability" else
                  ", scores are decision scores (the model's loss gives no probabilities: train "
                  "with model.loss log_loss or modified_huber for them)")
    # data: where the predictions are (and their accuracy), as `submit` prints a run's metrics
    print(f"{PREFIX}{summary['rows']} predictions written to {summary['out']}{extra}", flush=True)
    return 0


def _storage_options(pairs: list[str] | None) -> dict:
    """``--storage-option KEY=VALUE`` pairs (fsspec's names, as a job's storage_options)."""
    from runner.batch.store_urls import check_options
    from runner.errors import ConfigError

    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"predict: --storage-option {pair!r}: give KEY=VALUE, e.g. "
                              "endpoint_url=https://s3.example.com")
        options[key] = {"true": True, "false": False}.get(value.lower(), value)
    try:
        check_options(options)
    except BatchError as e:
        raise ConfigError(f"predict: --storage-option: {e}".replace(
            "data.storage_options: ", "")) from e
    return options


def add_commands(sub) -> None:
    """Add `runs` and `predict` to the `daskfleet` sub-command parser."""
    r = sub.add_parser("runs", help="the run history (runs/index.sqlite)")
    r.add_argument("--runs-dir", default="runs")
    r.add_argument("--json", action="store_true")
    rsub = r.add_subparsers(dest="runs_cmd")
    show = rsub.add_parser("show", help="one run: metrics summary and files")
    show.add_argument("id", help="run id (or a unique prefix of it)")
    show.add_argument("--runs-dir", default=argparse.SUPPRESS)
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    for name, what in (("wait", "wait for a detached run; exit 0 if it succeeded"),
                       ("cancel", "stop a detached run (recorded cancelled)"),
                       ("finish", "end a running training after its current epoch, keeping "
                                  "its model (attached runs: give -c)"),
                       ("logs", "a detached run's driver log")):
        sp = rsub.add_parser(name, help=what)
        sp.add_argument("id", help="run id")
        sp.add_argument("-c", "--cluster", default=None,
                        help="cluster file (for a run submitted from another machine)")
        sp.add_argument("--runs-dir", default=argparse.SUPPRESS)
        if name == "logs":
            sp.add_argument("-f", "--follow", action="store_true")
        if name == "wait":
            sp.add_argument("--timeout", type=float, default=None, help="seconds")
    r.set_defaults(func=cmd_runs)

    p = sub.add_parser("predict", help="batch inference with a saved model on the cluster")
    p.add_argument("model", help="model.joblib (or the run folder that holds it)")
    p.add_argument("data", help="parquet, csv or jsonl file with a text column; or an s3:// or "
                                "file:// URL (an object, a prefix, a glob), read by the workers")
    p.add_argument("-o", "--out", required=True,
                   help="output parquet file; or an s3:// or file:// prefix, written by the "
                        "workers (part-NNNNN.parquet, then _daskfleet_predict.json)")
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help="for URLs: fsspec's names (key, secret, token, endpoint_url, region, "
                        "anon, ...); the AWS_* variables of this shell fill in the rest")
    p.add_argument("-c", "--cluster", default=DEFAULT_CLUSTER, help="cluster file")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label",
                   help="optional: when present, the output keeps it next to the prediction")
    p.add_argument("--top-k", type=int, default=0, metavar="N",
                   help="also write the N best classes and their scores (top_1, score_1, ...)")
    p.add_argument("--proba", action="store_true",
                   help="also write every class's score (score:<label>): probabilities where "
                        "the model has them, else decision scores")
    p.set_defaults(func=cmd_predict)
