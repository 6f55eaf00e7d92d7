"""WordNet through nltk, offline-aware: found or a clear error; nltk's downloader is never called."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from curate.errors import CurateError

INSTALL_HINT = (
    "WordNet for nltk is not installed: run `make install` (it lays out Debian's wordnet-base and "
    "wordnet-sense-index as an nltk corpus in .data/nltk_data; see scripts/install_wordnet.sh), or with the "
    "internet `python -c \"import nltk; nltk.download('wordnet')\"`, then set NLTK_DATA to that folder"
)


def _candidate_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / ".data" / "nltk_data")  # make install's place in a checkout
    return dirs


@functools.cache
def wordnet() -> Any:  # noqa: ANN401 (nltk's corpus reader)
    import warnings

    warnings.filterwarnings("ignore", message="The multilingual functions are not available")
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    for d in _candidate_dirs():
        root = d / "corpora" / "wordnet"
        if (root / "lexnames").is_file() and (root / "data.noun").is_file():
            if str(d) not in nltk.data.path:
                nltk.data.path.insert(0, str(d))
            return WordNetCorpusReader(str(root), None)
    try:  # a regular nltk installation (nltk.download('wordnet')) wherever nltk looks
        path = nltk.data.find("corpora/wordnet")
    except LookupError:
        raise CurateError(INSTALL_HINT) from None
    return WordNetCorpusReader(str(path), None)


@functools.cache
def single_word_lemmas() -> tuple[str, ...]:
    """Every single-word, alphabetic WordNet lemma (sorted): a vocabulary for random insertions."""
    wn = wordnet()
    words = {name.lower() for name in wn.all_lemma_names() if name.isalpha()}
    return tuple(sorted(words))
