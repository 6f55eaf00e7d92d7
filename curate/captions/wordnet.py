"""WordNet through nltk, offline-aware: found or a clear error; nltk's downloader is never called."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from curate.errors import CurateError
from curate.io import fs

INSTALL_HINT = (
    "WordNet for nltk is not installed: run `make install` (it lays out Debian's wordnet-base and "
    "wordnet-sense-index as an nltk corpus in .data/nltk_data; see scripts/install_wordnet.sh), or with the "
    "internet `python -c \"import nltk; nltk.download('wordnet')\"`, then set NLTK_DATA to that folder"
)


def _candidate_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / ".data" / "nltk_data")  # make install's place in a checkout
    return dirs


def corpus_root() -> Path:
    """The WordNet corpus folder nltk will read (ours, NLTK_DATA's, or a regular nltk installation's)."""
    for d in _candidate_dirs():
        root = d / "corpora" / "wordnet"
        if (root / "lexnames").is_file() and (root / "data.noun").is_file():
            return root
    import nltk  # slow to import: only when our places do not have it

    try:  # a regular nltk installation (nltk.download('wordnet')) wherever nltk looks
        return Path(str(nltk.data.find("corpora/wordnet")))
    except LookupError:
        raise CurateError(INSTALL_HINT) from None


@functools.cache
def wordnet() -> Any:  # noqa: ANN401 (nltk's corpus reader)
    import warnings

    warnings.filterwarnings("ignore", message="The multilingual functions are not available")
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _Reader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            # nltk builds a WordNet-to-WordNet synset map at start for its multilingual (OMW) data, which curate
            # does not load: about 4 s of reading index.sense twice, for nothing
            return None

    root = corpus_root()
    if str(root.parents[1]) not in nltk.data.path:
        nltk.data.path.insert(0, str(root.parents[1]))
    return _Reader(str(root), None)


@functools.cache
def single_word_lemmas() -> tuple[str, ...]:
    """Every single-word, alphabetic WordNet lemma (sorted): a vocabulary for random insertions. Read from the
    index files (the lemma is each entry's first field), which is what nltk's all_lemma_names() lists, without
    the seconds nltk's reader takes to start; kept in the cache folder (`fs.cache_dir()`) under a name made from
    the index files' path, size and time, so later runs and workers read one small file (0.1 s less each)."""
    root = corpus_root()
    index = [root / f"index.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    cached = _word_list_path(index)
    try:
        text = cached.read_text(encoding="utf-8")
        return tuple(text.split("\n")) if text else ()
    except (OSError, UnicodeDecodeError):
        pass
    words: set[str] = set()
    for path in index:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(" "):
                    continue  # the license header
                name = line.split(" ", 1)[0]
                if name.isalpha():
                    words.add(name.lower())
    ordered = tuple(sorted(words))
    try:
        fs.write_text_atomic(str(cached), "\n".join(ordered))
    except OSError:
        pass  # a read-only cache folder only costs the next run the same 0.1 s
    return ordered


def _word_list_path(index: list[Path]) -> Path:
    stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in index]
    digest = hashlib.sha256(repr(stamp).encode()).hexdigest()[:16]
    return fs.cache_dir() / "wordnet" / f"single-word-lemmas-{digest}.txt"
