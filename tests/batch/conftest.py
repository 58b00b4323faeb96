"""One local multi-process Dask cluster for every batch test (no network beyond loopback), and
fixed apt package lists for the tests of `data.source: debian-packages`."""

from __future__ import annotations

import pytest
from aptlists import write_apt_lists

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="session")
def client():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


@pytest.fixture(scope="session")
def apt_lists_folder(tmp_path_factory):
    return write_apt_lists(tmp_path_factory.mktemp("apt-lists"))


@pytest.fixture
def apt_lists(apt_lists_folder, monkeypatch):
    """`debian-packages` reads the fixed lists, never the machine's (they change with apt)."""
    monkeypatch.setenv("DASKFLEET_APT_LISTS", str(apt_lists_folder))
    return apt_lists_folder
