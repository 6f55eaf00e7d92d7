"""curate's own messages through `logging` (the `curate` logger, on stderr), and the libraries' chatter off.

Verbosity (`curate -q/-v/-vv COMMAND`): -1 warnings and errors only; 0 (default) curate's progress lines; 1 also
the libraries' warnings, deprecation notices, config dumps and loading bars; 2 also curate's debug lines and
the libraries' info. Spawned workers (the executor's, Dask's on this machine) inherit it through CURATE_VERBOSITY.
"""

from __future__ import annotations

import logging
import os
import sys

ENV = "CURATE_VERBOSITY"
LIBRARIES = ("transformers", "diffusers", "huggingface_hub", "datasets", "torch", "PIL", "urllib3", "fsspec",
             "distributed", "dask", "open_clip", "timm", "img2dataset", "onnxruntime", "matplotlib", "nltk")
# read by transformers / huggingface_hub when they are imported (transformers' loading bars are the hub's)
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}

logger = logging.getLogger("curate")


def verbosity() -> int:
    try:
        return int(os.environ.get(ENV, "0"))
    except ValueError:
        return 0


def setup(level: int | None = None) -> None:
    """Configure logging for a curate process at `level` (default: CURATE_VERBOSITY, else 0)."""
    level = verbosity() if level is None else level
    os.environ[ENV] = str(level)
    ours = [h for h in logger.handlers if getattr(h, "_curate", False)]
    if ours:
        ours[0].setStream(sys.stderr)  # today's stderr (a test runner may have swapped it since)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._curate = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.WARNING if level < 0 else logging.DEBUG if level >= 2 else logging.INFO)
    if level < 1:
        for name, value in QUIET_ENV.items():
            os.environ.setdefault(name, value)
    logging.captureWarnings(True)  # warnings.warn from any library -> the py.warnings logger
    libraries = logging.INFO if level >= 2 else logging.WARNING if level == 1 else logging.ERROR
    for name in (*LIBRARIES, "py.warnings"):
        logging.getLogger(name).setLevel(libraries)
    quiet_libraries()


def quiet_libraries() -> None:
    """Apply the verbosity to diffusers and transformers if imported: they keep their own levels and bars, which
    only their own functions set (call this after importing them)."""
    loud = verbosity() >= 1
    for name in ("diffusers", "transformers"):
        module = sys.modules.get(f"{name}.utils.logging")
        if module is None:
            continue
        if loud:
            module.set_verbosity_info() if verbosity() >= 2 else module.set_verbosity_warning()
            module.enable_progress_bar()
        else:
            module.set_verbosity_error()
            module.disable_progress_bar()
