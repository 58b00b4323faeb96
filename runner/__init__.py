"""daskfleet: provision a Dask cluster and run NLP batches on it."""
