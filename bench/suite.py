"""The benchmark suite (`make bench`): every figure a ratio measured in this one run.

    .venv/bin/python bench/suite.py [--quick] [--only bringup scale day2 partitions throughput]

1. bringup (lab): `daskfleet up` cold on fresh hosts, then warm on the unchanged cluster; start
   to all workers ready, daskfleet against Dask's SSHCluster on the same hosts (bench/bringup.py).
2. scale (lab): end to end, peak worker memory above idle and the client's peak memory at 100k,
   400k and 1.6M synthetic documents; predict against one process (bench/scale.py).
   day2 (lab): a worker host's reboot until the cluster is healthy again (no operator), and a
   rolling replacement of 4 workers against a cold start of the same 4 (bench/day2.py).
   data (labs of its own, with the object store): the bytes this machine sends during one
   submit and each worker host's disk, for a local corpus (`copies: 1` and `2`) and the same
   documents in the object store, at 2 and 3 worker hosts; and the object-store job's time
   against the local one's, 1.6M documents (bench/data_traffic.py).
3. partitions (LocalCluster): accuracy and macro-F1 against single-process scikit-learn at 4, 16,
   64 and 256 partitions, Debian sections and a synthetic corpus (bench/partitions.py).
4. throughput (LocalCluster): the cluster's training rate against this machine's ceiling, the
   same training work (the workers' batches and partial_fit calls, grouped as the cluster groups
   the partitions) run by as many independent processes at once; and per worker core against
   one process, 100k and 400k documents (bench/throughput.py).
5. workers (LocalCluster): accuracy and macro-F1 against single-process scikit-learn at 2, 4, 8,
   16 and 32 one-thread workers, three seeds, Debian sections, a synthetic corpus without label
   noise and one with rare classes (bench/workers.py).
6. idle (local processes): the CPU an idle scheduler and two workers use, the node config that
   `daskfleet up` writes against distributed's defaults (bench/idle_cpu.py).

Writes bench/results/<date>.json and <date>.md, and the table into docs/performance.md between
its bench markers. `--quick` divides the corpus sizes by 16 and runs fewer rounds: a check that the
suite works, not figures to quote. Needs root and no lab up (the first `up` must meet fresh
hosts). Nothing here is asserted: the goals' column says whether each holds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PERFORMANCE_DOC = HERE.parent / "docs" / "performance.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
SECTIONS = ("bringup", "scale", "day2", "data", "partitions", "throughput", "workers", "idle")
DATA_DOCS = 1_600_000


def log(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def run_lab_sections(results: dict, quick: bool, only: set[str], save) -> None:
    import bringup
    import day2
    import scale

    from runner import Cluster
    from runner.lab import Lab

    lab = Lab()
    if lab.hosts():
        raise SystemExit("bench: a lab is up; the suite times `up` on fresh hosts and takes the "
                         "lab down at the end: run `daskfleet lab down` first")
    log("lab: 3 fresh hosts")
    lab.up(3, progress=lambda *_: None)
    try:
        if "bringup" in only:
            results["bringup"] = bringup.measure(rounds=1 if quick else 7, log=log)
            save()
        else:
            bringup.up_cli(Path("/dev/null"))
        if "scale" in only:
            sizes = [n // 16 for n in scale.SIZES] if quick else list(scale.SIZES)
            results["scale"] = scale.measure(sizes, log=log)
            save()
        if "day2" in only:
            results["day2"] = day2.measure(rounds=1 if quick else 2, log=log)
            save()
    finally:
        log("lab: down")
        with Cluster.from_file(bringup.LAB_CLUSTER) as cluster:
            cluster.down(destroy=True, progress=lambda *_: None)
        lab.down(progress=lambda *_: None)


def goals(results: dict) -> list[tuple[str, str, str, bool]]:
    """(goal, measured, target, holds) for every figure the suite has."""
    out = []
    if b := results.get("bringup"):
        out.append(("warm `up` / cold `up`", f"{b['up_warm_s']:.1f}s / {b['up_cold_s']:.1f}s = "
                    f"{b['warm_over_cold']:.2f}", "<= 0.20 and warm < 10 s",
                    b["warm_over_cold"] <= 0.2 and b["up_warm_s"] < 10))
        out.append(("start to all workers ready / SSHCluster (median)",
                    f"{b['start_median_daskfleet_s']:.2f}s / {b['start_median_sshcluster_s']:.2f}s"
                    f" = {b['start_ratio']:.2f}", "<= 1.0", b["start_ratio"] <= 1.0))
    if s := results.get("scale"):
        r, first, last = s["ratios"], s["sizes"][0], s["sizes"][-1]
        span = f"{first['docs']:,} -> {last['docs']:,} docs"
        out.append((f"end to end time, {span}", f"{last['seconds']:.0f}s / {first['seconds']:.0f}s"
                    f" = {r['time']:.1f}x", f"<= {r['corpus'] * 17 / 16:.0f}x", r["time"] <=
                    r["corpus"] * 17 / 16))
        out.append((f"peak worker memory above idle, {span}",
                    f"{last['worker_above_idle_mb']:.0f} / {first['worker_above_idle_mb']:.0f} MB"
                    f" = {r['worker_memory_above_idle']:.2f}x", "<= 1.2x",
                    r["worker_memory_above_idle"] <= 1.2))
        out.append((f"client peak memory in submit, {span}",
                    f"{last['client_peak_mb']:.0f} / {first['client_peak_mb']:.0f} MB = "
                    f"{r['client_memory_submit']:.2f}x", "<= 1.2x", r["client_memory_submit"] <= 1.2))
        if "client_memory_predict" in r:
            p0, p1 = s["predict"][0], s["predict"][-1]
            out.append((f"client peak memory in predict, {p0['rows']:,} -> {p1['rows']:,} rows",
                        f"{p1['client_peak_mb']:.0f} / {p0['client_peak_mb']:.0f} MB = "
                        f"{r['client_memory_predict']:.2f}x", "<= 1.2x",
                        r["client_memory_predict"] <= 1.2))
        for p in s["predict"]:
            out.append((f"predict throughput, {p['rows']:,} rows, cluster / one process",
                        f"{p['docs_per_s']:,.0f} / {p['single_docs_per_s']:,.0f} docs/s = "
                        f"{p['ratio']:.2f}", "(reported)", True))
    if i := results.get("idle"):
        out.append((f"idle CPU, {i['processes']}, node config / distributed's defaults",
                    f"{i['node_cpu_s_per_min']:.2f} / {i['defaults_cpu_s_per_min']:.2f} cpu-s/min"
                    f" = {i['node_over_defaults']:.2f}", "<= 0.70", i["node_over_defaults"] <= 0.7))
    if d := results.get("day2"):
        out.append(("worker host reboot until healthy, no operator (median)",
                    f"{d['reboot_median_s']:.1f}s", "<= 90 s", d["reboot_median_s"] <= 90))
        out.append((f"rolling replacement of {d['workers']} workers / cold start of "
                    f"{d['workers']} (median)",
                    f"{statistics.median(d['roll_s']):.1f}s / {statistics.median(d['cold_s']):.1f}s"
                    f" = {d['roll_over_cold']:.2f}", "(reported)", True))
    out += data_goals(results.get("data", []))
    for row in results.get("partitions", []):
        out.append((f"accuracy, {row['corpus']}, {row['partitions']} partitions, vs one process",
                    f"{row['accuracy']:.4f} vs {row['single_accuracy']:.4f} "
                    f"({row['accuracy_points']:+.2f} pts); macro-F1 {row['macro_f1_points']:+.2f}",
                    ">= -1 pt both", min(row["accuracy_points"], row["macro_f1_points"]) >= -1))
    for row in results.get("workers", []):
        a, f = row["accuracy_points"], row["macro_f1_points"]
        out.append((f"accuracy, {row['corpus']}, {row['workers']} workers "
                    f"({row['mixed_models']} models mixed, {row['n_train']:,} training rows), "
                    f"vs one process, {len(row['seeds'])} seeds",
                    f"{a['mean']:+.2f} pts [{a['min']:+.2f}, {a['max']:+.2f}]; macro-F1 "
                    f"{f['mean']:+.2f} [{f['min']:+.2f}, {f['max']:+.2f}]",
                    ">= -1 pt accuracy, >= -2 pts macro-F1 (mean)",
                    a["mean"] >= -1 and f["mean"] >= -2))
    for row in results.get("throughput", []):
        c, w = row[True], results["meta"]["workers"]
        # the goal: the cluster against the machine's ceiling, the same training work (the
        # workers' batches and calls) run by w independent processes at once
        out.append((f"training rate / this machine's ceiling ({w} independent processes running "
                    f"the workers' batches at once), {row['docs']:,} docs",
                    f"{c['train_dps']:,.0f} / {row['concurrent_train_dps']:,.0f} docs/s = "
                    f"{c['train_vs_ceiling']:.2f}", ">= 0.90", c["train_vs_ceiling"] >= 0.9))
        out.append((f"training per worker core / one process's whole-corpus fit, "
                    f"{row['docs']:,} docs",
                    f"{c['train_dps']:,.0f} docs/s on {w} workers vs "
                    f"{row['single_train_dps']:,.0f} = {c['train_per_core']:.2f} (the ceiling: "
                    f"{row['ceiling_per_core']:.2f})", "(reported)", True))
    return out


def data_goals(rows: list[dict]) -> list[tuple[str, str, str, bool]]:
    """bench/data_traffic.py's rows: what this machine sends and each host stores."""
    out = []
    for row in rows:
        n, docs = row["worker_hosts"], f"{row['docs']:,} docs"
        st = row["store"]
        out.append((f"bytes sent / corpus, object-store corpus, {n} worker hosts, {docs}",
                    f"{st['sent_bytes'] / 1e6:.2f} / {st['corpus_bytes'] / 1e6:.1f} MB = "
                    f"{100 * st['sent_over_corpus']:.2f} %", "< 1 %", st["sent_over_corpus"] < 0.01))
        for copies, local in sorted(row["local"].items()):
            out.append((f"bytes sent / corpus, local corpus, copies {copies}, {n} worker hosts",
                        f"{local['sent_bytes'] / 1e6:.1f} / {local['corpus_bytes'] / 1e6:.1f} MB "
                        f"= {local['sent_over_corpus']:.2f}x", f"<= {copies} x 1.05",
                        local["sent_over_corpus"] <= int(copies) * 1.05))
            out.append((f"largest host's disk / its share (corpus x copies / hosts), copies "
                        f"{copies}, {n} worker hosts", f"{local['max_host_over_share']:.2f}",
                        "<= 1.20", local["max_host_over_share"] <= 1.2))
        out.append((f"object-store job / local job (copies 1), end to end, {n} worker hosts, "
                    f"{docs}", f"{st['submit_s']:.0f}s / {row['local'][1]['submit_s']:.0f}s = "
                    f"{row['store_over_local_time']:.2f}", "(reported)", True))
    return out


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [f"Measured {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs), "
             f"`make bench`{' --quick' if meta['quick'] else ''}, {meta['minutes']:.0f} min; "
             "each figure is a ratio within this one run.", "",
             "| goal | measured | target | holds |", "|---|---|---|---|"]
    for goal, measured, target, holds in goals(results):
        lines.append(f"| {goal} | {measured} | {target} | {'yes' if holds else '**no**'} |")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def update_doc(table: str) -> bool:
    text = PERFORMANCE_DOC.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    write_atomic(PERFORMANCE_DOC, f"{head}{START}\n{table}{END}{tail}")
    return True


def main(argv: list[str] | None = None) -> int:
    import os

    import partitions
    import throughput

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes / 16, fewer rounds: a smoke run")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = ap.parse_args(argv)
    only = set(args.only)
    t0 = time.monotonic()
    # the suite's cluster state apart from a user's own (.daskfleet/, inventory/)
    work = Path(tempfile.mkdtemp(prefix="daskfleet-bench-"))
    os.environ.setdefault("DASKFLEET_STATE_DIR", str(work / ".daskfleet"))
    os.environ.setdefault("DASKFLEET_INVENTORY_DIR", str(work / "inventory"))
    results: dict = {"meta": {"date": dt.date.today().isoformat(), "quick": args.quick,
                              "machine": platform.platform(), "cpus": os.cpu_count(),
                              "workers": 2, "sections": sorted(only)}}
    out = HERE / "results" / f"{results['meta']['date']}{'-quick' if args.quick else ''}"
    out.parent.mkdir(exist_ok=True)

    def save() -> None:  # after every section: a later failure keeps what was measured
        results["meta"]["minutes"] = (time.monotonic() - t0) / 60
        write_atomic(out.with_suffix(".json"), json.dumps(results, indent=2, default=str))

    if only & {"bringup", "scale", "day2"}:
        run_lab_sections(results, args.quick, only, save)
    if "data" in only:
        import data_traffic

        log("data: bytes sent and stored per host, local and object-store corpora")
        results["data"] = data_traffic.measure([3, 4], DATA_DOCS // 16 if args.quick
                                               else DATA_DOCS, log)
        save()
    if "partitions" in only:
        log("partitions: accuracy against one process")
        results["partitions"] = partitions.measure((4, 16) if args.quick else (4, 16, 64, 256),
                                                   only="synthetic" if args.quick else None)
        save()
    if "throughput" in only:
        log("throughput: training per worker core")
        sizes = [6_250, 25_000] if args.quick else [100_000, 400_000]
        results["throughput"] = throughput.measure(sizes, workers=2, modes=(True,), log=log)
    if "workers" in only:
        import workers

        log("workers: accuracy as the workers grow")
        results["workers"] = (
            workers.measure((2, 4), seeds=(0,), corpora=("synthetic",), docs=20_000, log=log)
            if args.quick else workers.measure(log=log))
    if "idle" in only:
        import idle_cpu

        log("idle: the CPU of an idle scheduler and workers")
        results["idle"] = idle_cpu.measure(seconds=10 if args.quick else 30,
                                           rounds=1 if args.quick else 3, log=log)
    save()
    table = markdown(results)
    write_atomic(out.with_suffix(".md"), table)
    print(table)
    if not args.quick and only == set(SECTIONS) and update_doc(table):
        log("docs/performance.md: table updated")
    log(f"written: {out}.json, {out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
