"""`files` sources given as http(s) URLs, against a loopback server."""

from __future__ import annotations

import functools
import http.server
import threading

import pandas as pd
import pyarrow.parquet as pq
import pytest

from runner.batch import load_job, prepare_dataset
from runner.batch.remote import fetch
from runner.errors import BatchError, ConfigError


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def job(tmp_path, data: str):
    path = tmp_path / "job.yaml"
    path.write_text(f"name: j\ndata: {data}\n")
    return load_job(path)


def test_http_csv_is_downloaded_and_sharded(tmp_path, server):
    root, base = server
    pd.DataFrame({"text": [f"doc {i}" for i in range(50)], "label": ["a", "b"] * 25}).to_csv(
        root / "corpus.csv", index=False)
    j = job(tmp_path, f"{{source: files, url: '{base}/corpus.csv', shard_rows: 20}}")
    ds = prepare_dataset(j, tmp_path / "cache")
    assert ds.rows == 50 and len(ds.files) == 3
    texts = sorted(t for p in ds.paths for t in pq.read_table(p).column("text").to_pylist())
    assert texts == sorted(f"doc {i}" for i in range(50))
    assert not list((tmp_path / "cache" / "downloads").glob(".*tmp*"))
    # a changed file on the server gives a new dataset
    pd.DataFrame({"text": ["x y", "z w"], "label": ["a", "b"]}).to_csv(root / "corpus.csv",
                                                                     index=False)
    assert prepare_dataset(j, tmp_path / "cache").rows == 2


def test_http_errors_name_the_url(tmp_path, server):
    _, base = server
    with pytest.raises(BatchError, match=rf"{base}/absent.csv: download failed: HTTP 404"):
        fetch(f"{base}/absent.csv", tmp_path / "downloads")
    assert not list((tmp_path / "downloads").iterdir())  # nothing half-written


@pytest.mark.parametrize(("data", "words"), [
    ("{source: files, url: 'ftp://x/y.csv'}", "data.url: must start with http://"),
    ("{source: synthetic, url: 'http://x/y.csv', synthetic: {}}", "data.url: only allowed"),
    ("{source: files, url: 'http://x/data'}", "data.format: cannot be inferred from the URL"),
    ("{source: files, url: 'http://x/y.csv', format: text-dirs}", "data.format: text-dirs needs"),
    ("{source: files}", "data.path: required when source is 'files' (or give data.url)"),
])
def test_url_keys_are_checked(tmp_path, data, words):
    with pytest.raises(ConfigError) as info:
        job(tmp_path, data)
    assert words in str(info.value), str(info.value)


def test_url_and_path_together(tmp_path):
    (tmp_path / "a.csv").write_text("text,label\na,b\n")
    with pytest.raises(ConfigError, match="data.url: give either path or url, not both"):
        job(tmp_path, "{source: files, path: a.csv, url: 'http://x/a.csv'}")
