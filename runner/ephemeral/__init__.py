"""Ephemeral clusters (`provider: aws`, `mode: ephemeral`): one EC2 cluster per `daskfleet submit`,
made with dask-cloudprovider's EC2Cluster and always removed after the job; `gc` removes what a dead
control machine left; `plan` shows what a run makes and what it costs an hour (an estimate).

dask-cloudprovider is the `cloud` extra and is imported only here, lazily: the nodes never need it.
"""
