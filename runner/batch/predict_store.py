"""Worker side of `predict` on data where it lives: each worker reads input objects from an
object store (``s3://``) or a filesystem the nodes share (``file://``), predicts them, and, when
the output is such a URL too, writes its predictions there itself. Nothing of the input or the
output passes through the control machine; only row counts do.

The output is a prefix (folder) of parquet objects, ``part-00000.parquet`` ... one per input
object in the listing's order, with the columns ``source`` (the input object), ``row`` (the
row within it), ``label`` (null without a label column), ``prediction`` and the scores asked
for; then ``_daskfleet_predict.json``, written last, which says that every part is there. A
prefix that already holds objects is refused (nothing is overwritten)."""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
import pandas as pd

from runner.batch import store
from runner.batch.model import predict_frame
from runner.errors import BatchError

MANIFEST = "_daskfleet_predict.json"
INPUT = ("predict's input", "--storage-option ")
OUTPUT = ("predict's --out", "--storage-option ")


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _out_root(out_url: str, options: dict | None):
    fs, root = store.filesystem(out_url, options)
    return fs, root.rstrip("/")


def check_output(out_url: str, options: dict | None) -> None:
    """Refuse an output prefix that holds objects already (a second run would mix its parts
    with the first's); create the folder on a shared filesystem."""
    import pyarrow.fs as pafs

    fs, root = _out_root(out_url, options)
    try:
        if urllib.parse.urlsplit(out_url).scheme == "s3":
            bucket = root.split("/", 1)[0]
            if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise BatchError(f"predict's --out {out_url}: bucket {bucket!r} does not exist; "
                                 "create it or give another --out")
        held = [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True,
                                                               allow_not_found=True))
                if i.type == pafs.FileType.File]
        if held:
            raise BatchError(f"predict's --out {out_url}: holds {len(held)} object(s) already "
                             f"(e.g. {held[0].path}); give an empty prefix: nothing is "
                             "overwritten, nothing was predicted")
        if urllib.parse.urlsplit(out_url).scheme == "file":
            fs.create_dir(root, recursive=True)
    except OSError as e:
        raise store._explain(out_url, options, e, verb="write", names=OUTPUT) from e


def predict_object(url: str, item: dict, model: dict, text_col: str, label_col: str,
                   options: dict | None, top_k: int = 0, proba: bool = False,
                   out_url: str | None = None, out_options: dict | None = None,
                   index: int = 0):
    """Predict one input object. Without ``out_url``: the predictions (columns row, label,
    prediction, scores; ``row`` within the object). With it: written as part ``index`` there,
    and only {"rows", "labelled", "correct"} returned."""
    df, _ = store.read_input(url, item, text_col, label_col, options, label_optional=True)
    frame = pd.DataFrame({"row": np.arange(len(df), dtype=np.int64), "text": df["text"],
                          "label": df["label"]})
    out = predict_frame(frame, model, top_k, proba)
    if out_url is None:
        return out
    source = f"{urllib.parse.urlsplit(url).scheme}://{item['path']}"
    return write_part(out, source, out_url, out_options, index)


def predict_shard_to(path: str, model: dict, top_k: int, proba: bool, out_url: str | None,
                     out_opts: dict | None, index: int):
    """A shipped shard predicted; written to ``out_url`` as part ``index`` when given, else
    returned (the client appends it to the local output)."""
    from runner.batch.model import predict_shard

    df = predict_shard(path, model, top_k, proba)
    if out_url is None:
        return df
    return write_part(df, path, out_url, out_opts, index)


def write_part(df: pd.DataFrame, source: str, out_url: str, options: dict | None,
               index: int) -> dict:
    """Predictions of one input (``source``) written as part ``index``; returns their
    {"rows", "labelled", "correct"}, all the client gets back."""
    known = df["label"].notna()
    _write_part(df.assign(source=source)[["source", *df.columns]], out_url, options, index)
    return {"rows": int(len(df)), "labelled": int(known.sum()),
            "correct": int((df.loc[known, "label"] == df.loc[known, "prediction"]).sum())}


def _write_part(df: pd.DataFrame, out_url: str, options: dict | None, index: int) -> None:
    """One part, whole or not at all: an object store's PUT is; on a shared filesystem a
    temporary name is renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, root = _out_root(out_url, options)
    target = f"{root}/{part_name(index)}"
    shared_fs = urllib.parse.urlsplit(out_url).scheme == "file"
    path = f"{root}/.{part_name(index)}.tmp" if shared_fs else target
    table = pa.Table.from_pandas(df, preserve_index=False)
    try:
        pq.write_table(table, path, filesystem=fs)
        if shared_fs:
            fs.move(path, target)
    except OSError as e:
        raise store._explain(out_url, options, e, verb="write", names=OUTPUT) from e


def write_manifest(out_url: str, options: dict | None, summary: dict) -> None:
    """``_daskfleet_predict.json``, after every part: its presence says the output is whole."""
    fs, root = _out_root(out_url, options)
    try:
        with fs.open_output_stream(f"{root}/{MANIFEST}") as f:
            f.write(json.dumps(summary, indent=2).encode())
    except OSError as e:
        raise store._explain(out_url, options, e, verb="write", names=OUTPUT) from e
