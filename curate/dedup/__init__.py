"""Near-duplicate search, linking and counting: pure functions over arrays, no file I/O."""
