"""Batch jobs on a running cluster: ship inputs, submit, predict, and the run records."""
