"""curate: prepare text-to-image training data so that models trained on it copy less."""

import os

__version__ = "0.1.0"

# Importing curate turns off the phoning home of the libraries it drives and points their caches into curate's
# (set before they are imported; a user's own setting wins): ONNX Runtime's telemetry, which otherwise writes a
# device id and an event database under ~/.cache/Microsoft and $TMPDIR/.ses and uploads them; albumentations'
# check for a newer version (img2dataset imports it); matplotlib's font cache (~/.config, ~/.cache) and torch's
# inductor cache ($TMPDIR/torchinductor_USER), which go under $CURATE_CACHE (curate.io.fs.cache_dir) instead.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
_cache = os.environ.get("CURATE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "curate")
os.environ.setdefault("MPLCONFIGDIR", os.path.join(_cache, "matplotlib"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_cache, "torchinductor"))
