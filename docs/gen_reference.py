"""Write the key tables of docs/cluster-files.md and docs/job-files.md from the pydantic models.

    python docs/gen_reference.py           # rewrite the generated sections
    python docs/gen_reference.py --check   # exit 1, naming the files, when they are out of date

Keys, types, constraints and defaults come from the models (runner/config.py ClusterSpec,
runner/batch/job.py JobSpec), so they cannot drift. A key's one-line explanation is its Field
description where the model has one, else the entry of DESCRIPTIONS below (taken from the
commented examples these docs had); a key without either, or an entry naming no key, is an
error, so a new key cannot go undocumented.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

from runner.batch.job import JobSpec  # noqa: E402
from runner.config import ClusterSpec  # noqa: E402

END = "<!-- end generated -->"

# Explanations of the keys whose Field has no description, by dotted path ("[]": a list's items).
DESCRIPTIONS = {
    "cluster": {
        "name": "names `.daskfleet/<name>/` and `inventory/<name>/`",
        "provider": "where the machines come from (`terraform/modules/<provider>`)",
        "mode": "`long-lived`: `up`, `submit` (many times), `down`; `ephemeral` (aws only): each "
                "`submit` makes and removes the cluster, the other commands refuse the file",
        "ephemeral": "with `mode: ephemeral`: the EC2 cluster each `submit` makes "
                     "([cloud.md](cloud.md#ephemeral-clusters)); durations are a number and s, "
                     "m, h or d (e.g. 30m)",
        "ssh": "how to reach the hosts; lab: taken from the lab; hosts and clouds: `private_key` "
               "required",
        "ssh.user": "default: root (lab: the lab's user); aws: admin; gcp, azure: daskfleet",
        "ssh.private_key": "clouds: its .pub is installed for `user` on the VMs",
        "ssh.known_hosts": "hosts: must hold every host's key; clouds: written by daskfleet "
                           "(default `.daskfleet/<name>/known_hosts`)",
        "ssh.connect_timeout": "the SSH connect timeout, in seconds",
        "ssh.boot_timeout": "clouds: how long new VMs may take to answer over SSH, in seconds",
        "ssh.require_private_route": "aws with `use_public_ip: false`: refuse when this machine "
        "reaches the subnet only through its default route (false: that gateway routes the VPC)",
        "ssh.insecure_skip_host_key_check": "`true` skips host key verification, loudly, and "
                                            "never writes the unverified keys into the trusted "
                                            "known_hosts file",
        "hosts": "provider hosts: one scheduler, workers",
        "hosts[].name": "the host's name: 1 to 63 lowercase letters, digits and '-'",
        "hosts[].address": "an IP address or a DNS name",
        "hosts[].role": "exactly one host is the scheduler",
        "hosts[].user": "this host's login, instead of `ssh.user`",
        "hosts[].port": "this host's SSH port",
        "lab": "provider lab: the lab's hosts",
        "lab.worker_on_scheduler": "run a worker next to the scheduler on the first host too",
        "terraform": "cloud providers: the module's variables (`admin_cidr` is required)",
        "dask": "Dask's settings; clusters sharing hosts need ports of their own",
        "dask.scheduler_port": "the scheduler's port",
        "dask.dashboard_port": "the dashboard's port (on the scheduler's private address)",
        "dask.worker_port_range": "the workers' ports, low:high; the wheelhouse is served between "
                                  "nodes on a free one",
        "dask.nanny_port_range": "the nannies' ports, low:high",
        "dask.threads_per_worker": "threads of each worker",
        "dask.memory_limit": "auto: the host's memory (or the share below) split between its "
                             "workers",
        "dask.memory_share": "with auto: the fraction of each host this cluster takes (default "
                             "all); clusters sharing hosts need shares that add up to 1 at most",
        "dask.start_timeout": "seconds the processes may take to be ready",
        "dask.limits": "resource limits every Dask process starts with, soft and hard (as "
                       "systemd's LimitNOFILE, LimitNPROC, LimitCORE); unset: the node's own; a "
                       "change replaces the processes, a worker at a time",
        "dask.limits.nofile": "open files per process",
        "dask.limits.nproc": "processes and threads of the cluster's user",
        "dask.limits.core_dumps": "`false`: no core files (a worker's memory holds data), "
                                  "`true`: unlimited",
        "tls": "`false` is the only way to turn TLS off, and `up` then warns loudly",
        "environment": "variables for Terraform only (endpoint, credentials); override the shell's",
        "max_running_jobs": "detached runs (`submit --detach`) at a time; the others queue in the "
                            "order they were submitted",
        "state": "optional: the team's shared state "
                 "([operations.md](operations.md#a-cluster-a-team-shares))",
        "state.url": "the cluster's state under `<url>/<name>/`",
        "state.storage_options": "fsspec's names (endpoint_url, key, secret, token, region); "
                                 "else the standard AWS chain",
        "state.passphrase_env": "the CA is stored encrypted with its value",
        "results": "optional: where every run on this cluster copies its run folder, as a job "
                   "file's `results` ([job-files.md](job-files.md#results)), which wins",
        "results.storage_options": "as a job file's",
        "ephemeral.region": "the AWS region",
        "ephemeral.admin_cidr": "who may reach the scheduler's and dashboard's ports: the control "
                                "machine's range (no default, `/0` refused)",
        "ephemeral.network": "where the instances go: an existing subnet, or a VPC and subnet made "
                             "for the run",
        "ephemeral.network.subnet_id": "an existing subnet (nothing made)",
        "ephemeral.network.vpc_cidr": "with `subnet_cidr`: a VPC made for the run, with an "
        "internet gateway (a public subnet)",
        "ephemeral.network.public_addresses": "public addresses for the instances (this machine "
        "dials the scheduler's, from `admin_cidr`); default: true for a VPC made for the run, "
        "false for a `subnet_id` (which must then route out through a NAT)",
        "ephemeral.network.subnet_cidr": "with `vpc_cidr`: a subnet made for the run",
        "ephemeral.network.require_route": "refuse when this machine reaches the subnet only "
        "through its default route (false: that gateway routes the VPC, e.g. Direct Connect)",
        "ephemeral.network.require_nat": "with `subnet_id`: refuse a subnet whose 0.0.0.0/0 "
        "does not go through a NAT (false: it reaches your registry through VPC endpoints)",
        "ephemeral.network.availability_zone": "the made subnet's zone; default: the first of the "
        "region that offers both instance types (checked before anything is made, as the "
        "vCPU quotas are)",
        "ephemeral.image": "the image: an `id`, or `owner` and `name`",
        "ephemeral.image.id": "an AMI id",
        "ephemeral.image.owner": "the image's owner (an account id), with `name`",
        "ephemeral.image.name": "a glob of image names, with `owner`",
        "ephemeral.scheduler_instance_type": "the scheduler's instance type",
        "ephemeral.worker_instance_type": "the workers' instance type",
        "ephemeral.workers": "worker instances",
        "ephemeral.spot_workers": "workers only; the scheduler is on-demand",
        "ephemeral.spot_fallback": "spot refused: `fail` stops the run before the job; "
                                   "`on_demand` launches those workers on-demand (costs more)",
        "ephemeral.filesystem_size": "GiB of each instance's encrypted gp3 root volume",
        "ephemeral.docker_image": "default: this machine's dask and Python",
        "ephemeral.bootstrap": "install Docker at boot (dask-cloudprovider's bootstrap)",
        "ephemeral.max_lifetime": "every instance powers itself off then (at least 2m); the "
                                  "resources' expiry tag",
        "ephemeral.idle_timeout": "an orphaned scheduler closes itself, then its VM",
        "ephemeral.no_workers_timeout": "tasks that no worker can run for this long fail (every "
                                        "spot worker reclaimed)",
        "ephemeral.worker_death_timeout": "a worker that cannot reach its scheduler this long at "
                                          "start exits",
        "ephemeral.ready_timeout": "seconds the instances may take until the scheduler and every "
                                   "worker are up",
    },
    "job": {
        "data.source": "`debian-packages`: the lists of /var/lib/apt/lists (`DASKFLEET_APT_LISTS`: "
                       "another folder); `files`; `synthetic`",
        "data.path": "files: a file, a glob or a folder (`data/`, `data/*.csv`, `corpus.parquet`), "
                     "relative to the job file's folder; or an `s3://` or `file://` URL, read by "
                     "the workers where it lives",
        "data.url": "files: one file, downloaded by the control machine",
        "data.format": "inferred when omitted; text-dirs: one folder per label",
        "data.text_column": "files only",
        "data.label_column": "files only",
        "data.limit": "a stable sample, for quick runs",
        "data.on_error": "`skip`: corrupt files left out, counted (`skipped_files`)",
        "data.synthetic": "source synthetic: the generated corpus",
        "data.synthetic.n_docs": "documents",
        "data.synthetic.n_classes": "classes",
        "data.synthetic.vocab_size": "words in the vocabulary",
        "data.synthetic.doc_len": "words a document, on average",
        "data.synthetic.noise": "the share of documents whose label is drawn at random",
        "data.synthetic.seed": "the same seed gives the same documents",
        "data.shard_rows": "rows a partition, instead of `partition_mb`",
        "data.partition_mb": "MB of text a partition (at most 20,000 rows a partition)",
        "data.copies": "a corpus prepared here: how many worker hosts get each shard (2: a job outlives the loss of one host; 1: the corpus is sent once in all); with `features.cache: false` too, each shard is rebuilt on its hosts only",
        "data.path_url": "set by daskfleet from a URL `path`; not for job files",
        "data.storage_options": "with a URL `path`: fsspec's names (`key`, `secret`, `token`, "
                                "`endpoint_url`, `region`, `anon`)",
        "clean": "cleaning steps, in this order: Unicode NFKC, HTML, lowercase, URLs, e-mail "
                 "addresses, stand-alone numbers, punctuation, stop words, short tokens",
        "clean.unicode_nfkc": "Unicode NFKC: folds full-width letters and digits",
        "clean.strip_html": "HTML tags and entities",
        "clean.lowercase": "lowercase",
        "clean.strip_urls": "URLs",
        "clean.strip_emails": "e-mail addresses",
        "clean.strip_numbers": "stand-alone numbers",
        "clean.strip_punctuation": "punctuation, by Unicode class (letters, digits and combining "
                                   "marks of every script stay)",
        "clean.stop_words": "`english`, a list of words, or null",
        "clean.min_token_len": "shorter tokens are dropped",
        "clean.stem": "`english` (Snowball, snowballstemmer); null: no stemming",
        "features": "hashed features of the cleaned text",
        "features.n_features": "a power of two from 16 to 2**24 (e.g. 262144)",
        "features.analyzer": "scikit-learn's analyzers; auto: word n-grams, unless 30 % or more "
                             "of the texts are written without spaces (Chinese, Japanese, "
                             "Thai...), then char_wb; the run log says which and why",
        "features.ngram_range": "[min_n, max_n]; [1, 2] for words, [1, 3] for characters by "
                                "default",
        "features.alternate_sign": "must be false for naive_bayes",
        "features.norm": "row normalisation",
        "features.tfidf": "weights the hashed counts by idf from document frequencies summed "
                          "over all partitions' training rows",
        "features.cache": "false: rebuilt in every pass, flat worker memory, slower (sgd, "
                          "naive_bayes)",
        "split": "by a hash of the cleaned text: cleaning twins stay on one side",
        "split.seed": "the hash's seed",
        "split.stratify": "each label of at most 1000 rows gets round(test_fraction x its rows) "
                          "test rows (at least one, and one training row at least); false: the "
                          "plain hash split, where a rare label may fall on one side",
        "model": "the classifier ([Models](#models))",
        "model.kind": "`sgd`, `naive_bayes` or `incremental`",
        "model.variant": "naive_bayes: complement (default) or multinomial",
        "model.epochs": "passes over the training rows",
        "model.alpha": "the SGD regularisation, or the naive-Bayes smoothing (defaults 1e-5 and "
                       "1.0)",
        "model.loss": "sgd, incremental: scikit-learn's SGDClassifier loss",
        "model.seed": "the model's random seed",
        "model.learning_rate": "sgd, incremental: scikit-learn's names and defaults",
        "model.eta0": "sgd, incremental: scikit-learn's names and defaults",
        "model.power_t": "sgd, incremental: scikit-learn's names and defaults",
        "model.class_weight": "balanced (from the training split's label counts) or "
                              "{label: weight}",
        "model.average": "sgd: averaged SGD (ASGD) from the first row (true) or once the schedule "
                         "counted N rows; costs 6 more copies of the weights a worker",
        "search": "a grid fitted in parallel on the training rows minus a validation split; the "
                  "best macro-F1 is refitted on all training rows",
        "search.grid": "parameters and their values: alpha, loss (sgd); alpha (naive_bayes)",
        "search.validation_fraction": "the validation split's share of the training rows (by "
                                      "text hash)",
        "search.max_candidates": "the most grid combinations allowed",
        "results": "a copy of each run folder (failed ones too) at `<path>/<run-id>/`, by the "
                   "job's driver",
        "results.storage_options": "as data's; the submitting shell's AWS variables fill in what "
                                   "it does not name",
    },
}

TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "true or false",
              Path: "path", Any: "any"}


def _constraints(metadata) -> list[str]:
    out = []
    for m in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                out.append(f"{sign} {getattr(m, attr)}")
        if getattr(m, "max_length", None) is not None:
            out.append(f"at most {m.max_length} characters")
        if getattr(m, "pattern", None) is not None:
            out.append(f"matching `{m.pattern}`")
        out += _constraints(getattr(m, "metadata", ()))  # a Field(...) inside Annotated[...]
    return out


def _plural(text: str) -> str:
    """"integer (>= 1)" -> "integers (>= 1)"; other texts as they are."""
    word, _, rest = text.partition(" ")
    if word in ("string", "integer", "number", "list"):
        return f"{word}s {rest}".rstrip()
    return "anything" if text == "any" else text


def _with(text: str, constraints: list[str]) -> str:
    return f"{text} ({', '.join(constraints)})" if constraints else text


def _section(ann) -> type[BaseModel] | None:
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def type_text(ann, anchor=None) -> str:
    origin, args = get_origin(ann), get_args(ann)
    if origin is Annotated:
        return _with(type_text(args[0], anchor), _constraints(args[1:]))
    if origin in (Union, types.UnionType):
        parts = [type_text(a, anchor) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return " or ".join(f"`{v}`" for v in args)
    if origin is list:
        item = args[0]
        if _section(item):
            return f"list of entries ({anchor(item)})"
        return f"list of {_plural(type_text(item, anchor))}"
    if origin is dict:
        return "mapping" if args[1] is Any else f"mapping to {_plural(type_text(args[1], anchor))}"
    if _section(ann):
        return f"section ({anchor(ann)})"
    return TYPE_NAMES.get(ann, getattr(ann, "__name__", str(ann)))


def default_text(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(its keys' defaults)"
    if isinstance(value, Path):
        value = str(value)
    return "`" + json.dumps(value).strip('"') + "`"


def _sections_of(ann) -> list[type[BaseModel]]:
    found = [ann] if _section(ann) else []
    for a in get_args(ann):
        found += _sections_of(a)
    return found


def _tables(model: type[BaseModel], path: str, descriptions: dict, used: set,
            missing: list) -> list[str]:
    heading = f"`{path}`" if path else "Top level"
    rows, nested = [], []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{path}.{name}" if path else name
        subs = _sections_of(field.annotation)
        is_list = get_origin(field.annotation) is list
        child = f"{key}[]" if is_list else key

        def anchor(_model, child=child):
            return f"[below](#{slug('`' + child + '`')})"

        desc = field.description or descriptions.get(key, "")
        if key in descriptions and not field.description:
            used.add(key)
        if not desc:
            missing.append(key)
        kind = _with(type_text(field.annotation, anchor), _constraints(field.metadata))
        cells = [f"`{name}`", kind, default_text(field), desc]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        for sub in subs:
            nested.append((sub, child))
    out = [f"### {heading}", "", "| key | type | default | what it is |", "|---|---|---|---|",
           *rows, ""]
    for sub, child in nested:
        out += _tables(sub, child, descriptions, used, missing)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (github-slugger: lowercase, punctuation but - and _ gone)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def reference(model: type[BaseModel], kind: str, source: str) -> str:
    descriptions = DESCRIPTIONS[kind]
    used: set[str] = set()
    missing: list[str] = []
    lines = _tables(model, "", descriptions, used, missing)
    stale = sorted(set(descriptions) - used)
    if stale or missing:
        raise SystemExit(
            "docs/gen_reference.py: "
            + (f"descriptions of keys the {kind} model does not have (or whose Field now has a "
               f"description): {', '.join(stale)}. " if stale else "")
            + (f"keys of the {kind} model without a description: {', '.join(missing)}; add a "
               f"Field description or an entry of DESCRIPTIONS['{kind}']." if missing else ""))
    note = (f"Generated from `{source}` by `python docs/gen_reference.py`; do not edit by hand. "
            "Keys, types, limits and defaults are the model's.")
    return "\n".join([note, "", *lines]).rstrip("\n") + "\n"


TARGETS = {
    DOCS / "cluster-files.md": ("<!-- generated: cluster reference -->",
                                lambda: reference(ClusterSpec, "cluster", "runner/config.py")),
    DOCS / "job-files.md": ("<!-- generated: job reference -->",
                            lambda: reference(JobSpec, "job", "runner/batch/job.py")),
}


def render(text: str, start: str, body: str) -> str:
    """``text`` with what lies between ``start`` and the next END replaced by ``body``."""
    if start not in text or END not in text.split(start, 1)[1]:
        raise SystemExit(f"docs/gen_reference.py: the markers {start} ... {END} are missing")
    head, rest = text.split(start, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{start}\n{body}{END}{tail}"


def out_of_date() -> dict[Path, str]:
    """The files whose generated section differs, with the text they should have."""
    stale = {}
    for path, (start, make) in TARGETS.items():
        text = path.read_text()
        wanted = render(text, start, make())
        if wanted != text:
            stale[path] = wanted
    return stale


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stale = out_of_date()
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(DOCS.parent)}: generated section out of date; run "
                  "python docs/gen_reference.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in stale.items():
        path.write_text(text)
        print(f"updated {path.relative_to(DOCS.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
