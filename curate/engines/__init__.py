"""Where shard tasks run: `local` (this machine: in process or spawned workers) or `dask` (a Dask cluster)."""

ENGINES = ("local", "dask")
