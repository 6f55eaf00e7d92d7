"""Network safety for untrusted URL lists."""
