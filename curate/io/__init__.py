"""Readers and writers: shard listing, parquet streaming, atomic commits, webdataset tars."""
