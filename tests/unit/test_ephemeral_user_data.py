"""An ephemeral cluster's user data stays under EC2's 16,384 bytes whatever the submitting
user's dask config: only the TLS settings EC2Cluster sets go to the instances, as paths to the
files the join hands over (runner/ephemeral/join.py), never a key."""

from __future__ import annotations

import dask.config
import pytest

pytest.importorskip("dask_cloudprovider")


def test_a_large_user_dask_config_never_reaches_the_instances():
    from dask_cloudprovider.generic import vmcluster
    from dask_cloudprovider.utils.config_helper import serialize_custom_config

    from runner.ephemeral.ec2cluster import NODE_TLS, ec2_cluster_class, node_config

    big = {f"my-team.setting-{i}": "x" * 200 for i in range(100)}  # a 20 KB ~/.config/dask
    tls = {"distributed.comm.require-encryption": True,
           "distributed.comm.tls.client.key": "-----BEGIN PRIVATE KEY-----\n" + "k" * 1600}
    with dask.config.set({**big, **tls}):
        stock = serialize_custom_config()
        ours = node_config()
        ec2_cluster_class()  # installs node_config where EC2Cluster's instances read it
        assert vmcluster.serialize_custom_config is node_config
        inherited = dask.config.deserialize(ours)
    assert len(stock) > 20_000  # what dask-cloudprovider alone would put in the user data
    assert len(ours) < 4_000
    assert inherited["distributed"]["comm"]["require-encryption"] is True
    # the TLS files' paths on the node, not their contents (those the join hands over)
    assert inherited["distributed"]["comm"]["tls"] == NODE_TLS
    assert "PRIVATE KEY" in str(dask.config.deserialize(stock)) and "PRIVATE KEY" not in str(inherited)
    assert "my-team" not in inherited
