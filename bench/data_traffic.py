"""Where a job's data goes (issue 18's measures): the bytes this machine sends into the lab during
one `daskfleet submit`, and what each worker host stores on disk, for a local corpus shipped with
`data.copies: 1` and `2`, and for the same documents in the lab's object store, read by the
workers; at 2 and at 3 worker hosts (a lab of 3 and of 4 hosts: lab1 runs the scheduler). Also
the end-to-end time of the object-store job against the local one, in the same lab.

    flock /work/lab.lock .venv/bin/python bench/data_traffic.py [--hosts 3 4] [--docs 200000]

Needs root and no lab up (it makes one per size). Bytes are the lab bridge's transmit counter
(runner.lab.uplink.bridge_tx_bytes): what this machine sent, never what the hosts send each
other. Each local job uses a corpus of its own seed, so every one is shipped from nothing. Goals:
an object-store corpus under 1 % of the corpus sent, whatever the number of hosts; a local one
about `copies` x the corpus, and each host's share about corpus x copies / hosts, + 20 % at
most. A benchmark: nothing asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from runner.lab import Lab
from runner.lab.uplink import bridge_tx_bytes

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = "/var/lib/daskfleet/data"
SHARD_ROWS = 20_000


def job_text(name: str, data: str, docs: int) -> str:
    return (f"name: {name}\ndata:\n{data}features: {{n_features: 262144}}\n"
            "model: {kind: sgd, epochs: 2}\n").replace("DOCS", str(docs))


def synthetic(seed: int, copies: int) -> str:
    return ("  source: synthetic\n  synthetic: {n_docs: DOCS, n_classes: 10, vocab_size: 20000, "
            f"doc_len: 60, noise: 0.05, seed: {seed}}}\n  shard_rows: {SHARD_ROWS}\n"
            f"  copies: {copies}\n")


def stored_bytes(cluster_file: Path, env: dict, name: str) -> dict[str, int]:
    """Bytes of parquet shards each worker host holds for the cluster ``name``."""
    from runner.cluster import Cluster
    from runner.jobs.ship import held

    os.environ.update({k: env[k] for k in ("DASKFLEET_STATE_DIR", "DASKFLEET_INVENTORY_DIR")})
    with Cluster.from_file(cluster_file) as cluster:
        return {host: sum(shards.values()) for host, shards in
                held(cluster.worker_hosts(), cluster.ssh(), name).items()}


def run_size(n_hosts: int, docs: int, workdir: Path, log) -> dict:
    import boto3

    from runner.batch.synthetic import generate

    lab = Lab()
    lab.up(n_hosts, progress=lambda *_: None, object_store=True)
    name = f"traffic{n_hosts}"
    cfile = workdir / f"{name}.yaml"
    cfile.write_text(yaml.safe_dump({"name": name, "provider": "lab", "lab": {"hosts": n_hosts},
                                     "dask": {"threads_per_worker": 1}}))
    env = {**os.environ, "DASKFLEET_STATE_DIR": str(workdir / f"state-{n_hosts}"),
           "DASKFLEET_INVENTORY_DIR": str(workdir / f"inventory-{n_hosts}"),
           "PYTHONUNBUFFERED": "1"}

    def cli(*args: str, extra: dict | None = None) -> tuple[str, float, int]:
        sent0, t0 = bridge_tx_bytes(), time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "runner.cli", *args], cwd=ROOT,
                              env={**env, **(extra or {})}, capture_output=True, text=True)
        seconds, sent = time.monotonic() - t0, bridge_tx_bytes() - sent0
        if proc.returncode != 0:
            raise SystemExit(f"daskfleet {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout, seconds, sent

    try:
        cli("up", "-c", str(cfile))
        out: dict = {"hosts": n_hosts, "worker_hosts": n_hosts - 1, "docs": docs, "local": {}}
        for copies, seed in ((1, 101), (2, 202)):
            job = workdir / f"local-{copies}.yaml"
            job.write_text(job_text(f"local{copies}", synthetic(seed, copies), docs))
            before = stored_bytes(cfile, env, name)
            # timed: the whole submit, preparing the corpus here (generated, written as shards)
            # included, as a user of a local corpus waits for it
            text, seconds, sent = cli("submit", str(job), "-c", str(cfile),
                                      "--runs-dir", str(workdir / "runs"))
            after = stored_bytes(cfile, env, name)
            # the shards' size as the ship line says it (to 0.1 MB)
            corpus = round(float(re.search(r"shards \(([\d.]+) MB\)", text)[1]) * 1e6)
            per_host = {h: after[h] - before.get(h, 0) for h in after}
            out["local"][copies] = {
                "submit_s": seconds, "sent_bytes": sent, "corpus_bytes": corpus,
                "sent_over_corpus": sent / corpus, "per_host_bytes": per_host,
                "max_host_over_share": max(per_host.values()) / (corpus * min(copies, len(after))
                                                                 / len(after)),
                "accuracy": float(re.search(r"accuracy=(\S+)", text)[1])}
            log(f"{n_hosts - 1} worker hosts, local copies {copies}: sent {sent / 1e6:.1f} MB = "
                f"{sent / corpus:.2f}x the {corpus / 1e6:.1f} MB corpus; per host "
                + ", ".join(f"{h} {b / 1e6:.1f} MB" for h, b in per_host.items())
                + f"; submit {seconds:.1f}s")

        # the same documents as copies 1's, in the object store (one object per 20,000 rows)
        st = json.loads(subprocess.run([sys.executable, "-m", "runner.cli", "lab", "status",
                                        "--json"], cwd=ROOT, env=env, capture_output=True,
                                       text=True, check=True).stdout)["object_store"]
        creds = json.loads(Path(st["credentials"]).read_text())
        s3 = boto3.client("s3", endpoint_url=st["endpoint"], region_name=st["region"],
                          aws_access_key_id=creds["key"], aws_secret_access_key=creds["secret"])
        s3.create_bucket(Bucket="bench")
        import pandas as pd

        rows = generate(docs, 10, 20000, 60, 0.05, 101)
        stored, i = 0, 0
        while True:
            chunk = [next(rows, None) for _ in range(SHARD_ROWS)]
            chunk = [r for r in chunk if r is not None]
            if not chunk:
                break
            body = pd.DataFrame(chunk, columns=["text", "label"]).to_parquet(index=False)
            s3.put_object(Bucket="bench", Key=f"corpus/part-{i:05d}.parquet", Body=body)
            stored, i = stored + len(body), i + 1
        job = workdir / "store.yaml"
        job.write_text(job_text("store", "  source: files\n  path: s3://bench/corpus/*.parquet\n",
                                docs))
        aws = {"AWS_ACCESS_KEY_ID": creds["key"], "AWS_SECRET_ACCESS_KEY": creds["secret"],
               "AWS_ENDPOINT_URL": st["endpoint"], "AWS_REGION": st["region"]}
        text, seconds, sent = cli("submit", str(job), "-c", str(cfile), "--runs-dir",
                                  str(workdir / "runs"), extra=aws)
        out["store"] = {"submit_s": seconds, "sent_bytes": sent, "corpus_bytes": stored,
                        "sent_over_corpus": sent / stored,
                        "accuracy": float(re.search(r"accuracy=(\S+)", text)[1])}
        out["store_over_local_time"] = seconds / out["local"][1]["submit_s"]
        log(f"{n_hosts - 1} worker hosts, object store: sent {sent / 1e6:.2f} MB = "
            f"{100 * sent / stored:.2f} % of the {stored / 1e6:.1f} MB corpus; submit "
            f"{seconds:.1f}s = {out['store_over_local_time']:.2f}x the local copies-1 job's")
        cli("down", "-c", str(cfile), "--destroy")
        return out
    finally:
        lab.down(progress=lambda *_: None)


def measure(hosts: list[int], docs: int, log) -> list[dict]:
    """One row per lab size (hosts, lab1 the scheduler's): see run_size. The suite's `data`
    section (bench/suite.py) calls this."""
    if Lab().hosts():
        raise SystemExit("bench/data_traffic.py makes its own labs: run `daskfleet lab down` "
                         "first")
    with tempfile.TemporaryDirectory(prefix="daskfleet-traffic-") as tmp:
        return [run_size(n, docs, Path(tmp), log) for n in hosts]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--docs", type=int, default=200_000)
    args = ap.parse_args(argv)

    def log(line: str) -> None:
        print(f"[bench] {line}", flush=True)

    rows = measure(args.hosts, args.docs, log)
    stamp = time.strftime("%Y-%m-%d")
    path = ROOT / "bench" / "results" / f"{stamp}-data-traffic-{args.docs}.json"
    tmp_path = path.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(rows, indent=2) + "\n")
    tmp_path.rename(path)
    log(f"written {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
