"""Credit data: schemas, validation, bundled datasets, the synthetic generator and partitions."""
