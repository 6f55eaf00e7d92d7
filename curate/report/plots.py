"""Matplotlib figures as PNG bytes (Agg backend, no display needed)."""

from __future__ import annotations

import io

import numpy as np


def _fig() -> tuple:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    return plt, fig, ax


def _png(plt, fig) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def histogram(values: np.ndarray, title: str, xlabel: str, bins: int = 50, log: bool = False,
              vline: float | None = None) -> bytes:
    plt, fig, ax = _fig()
    values = np.asarray(values)
    values = values[np.isfinite(values)]  # in the values' own type (float32: 4 bytes a row at 12M)
    ax.hist(values, bins=bins, color="#3b6ea8", log=log)
    if vline is not None:
        ax.axvline(vline, color="#c0392b", linestyle="--", label=f"threshold {vline:g}")
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _png(plt, fig)


def bars(labels: list[str], values: list[float], title: str, ylabel: str) -> bytes:
    plt, fig, ax = _fig()
    ax.bar(labels, values, color="#3b6ea8")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return _png(plt, fig)
