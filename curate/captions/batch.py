"""The caption operations over whole Arrow columns: the one implementation of RT, CWR, RNA and RC.

Every random choice is a counter-based draw from a 64-bit stream derived from (seed, key, operation, variant):
FNV-1a over the key's UTF-8 bytes, mixed with splitmix64. A row's result therefore depends only on its own
(caption, key) and the seed, never on the other rows of the batch, the shard order or the worker count, and the
work is a handful of vectorised Arrow/numpy passes instead of a Python loop per caption.

Tokens are whitespace-separated (Arrow's Unicode `utf8_split_whitespace`); a caption with no token (null,
empty, only spaces) is returned as it is. Insertions pick, for each new word, one of the len+1 gaps between
the original tokens uniformly (words drawn for the same gap keep their draw order). The caption outside the
inserted words stays byte for byte what it was: most captions are single-spaced, so joining their tokens with
single spaces gives that; the few others (tabs, runs of spaces, no-break spaces, edge spaces) are spliced row by
row instead (`_splice`), their whitespace kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SPACE = pa.scalar(" ", pa.large_string())
_ASCII_NOT_ALNUM = "".join(chr(c) for c in range(128) if not chr(c).isalnum())
_TAGS = {"paraphrase": 1, "rt": 2, "cwr": 3, "rna": 4, "rc": 5, "pool": 6, "pick": 7, "target": 8, "train": 9,
         "dup": 10, "insert": 11}


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _strings(values: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> pa.LargeStringArray:
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(list(values), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.string())
    return arr.cast(pa.large_string())


def key_hashes(keys: pa.Array | Sequence[str]) -> np.ndarray:
    """FNV-1a (64-bit) of each key's UTF-8 bytes, vectorised over byte positions."""
    arr = _strings(keys)
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    if arr.null_count:
        lengths = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    h = np.full(n, _FNV_OFFSET, np.uint64)
    width = int(lengths.max()) if n else 0
    if width == 0:
        return h
    matrix = np.zeros((n, width), np.uint8)  # keys are short (<= 128 chars once sanitised)
    rows = np.repeat(np.arange(n), lengths)
    pos = within(lengths)
    matrix[rows, pos] = data[np.repeat(offsets[:-1], lengths) + pos]
    with np.errstate(over="ignore"):
        for p in range(width):
            live = lengths > p
            h = np.where(live, (h ^ matrix[:, p].astype(np.uint64)) * _FNV_PRIME, h)
    return h


def streams(keys: pa.Array | Sequence[str] | np.ndarray, seed: int, op: str, variant: int | np.ndarray = 0) -> np.ndarray:
    """One 64-bit stream per row for (seed, key, op, variant); `keys` may be precomputed `key_hashes`."""
    h = keys if isinstance(keys, np.ndarray) and keys.dtype == np.uint64 else key_hashes(keys)
    salt = _mix(np.uint64((seed & 0xFFFFFFFF) << 8 | _TAGS[op]) * np.ones(1, np.uint64))[0]
    v = np.asarray(variant, np.uint64)
    with np.errstate(over="ignore"):
        return _mix(h ^ salt ^ _mix(v * _GOLDEN + np.uint64(1)))


def draw(stream: np.ndarray, i: int, bound: int | np.ndarray) -> np.ndarray:
    """The i-th draw of each stream, uniform in [0, bound) (bound >= 1, scalar or per row)."""
    with np.errstate(over="ignore"):
        x = _mix(stream + np.uint64(i + 1) * _GOLDEN)
    u = (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    b = np.asarray(bound, np.int64)
    return np.minimum((u * b).astype(np.int64), np.maximum(b - 1, 0))


def uniform(stream: np.ndarray, i: int = 0) -> np.ndarray:
    """The i-th draw of each stream as a float in [0, 1)."""
    with np.errstate(over="ignore"):
        x = _mix(stream + np.uint64(i + 1) * _GOLDEN)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


# Arrow's whitespace (utf8_split_whitespace): ASCII \t\n\v\f\r, 0x1c-0x1f, U+0085 and Unicode Zs/Zl/Zp.
_ODD_SPACE = (r"[\t\n\v\f\r\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}"
              r"\x{205f}\x{3000}]|  |^ | $")


def single_spaced(captions: pa.Array) -> pa.LargeStringArray:
    """Tokens joined by one ASCII space, none at the ends. Only rows with other whitespace, runs of spaces or
    edge spaces are split and re-joined (most captions already are single-spaced): the regex runs only on the
    rows a scan of the UTF-8 bytes flags (`_maybe_odd`)."""
    caps = _strings(captions)
    maybe = np.flatnonzero(_maybe_odd(caps))
    if len(maybe) == 0:
        return caps
    odd = np.zeros(len(caps), bool)
    odd[maybe] = pc.fill_null(pc.match_substring_regex(caps.take(pa.array(maybe)), _ODD_SPACE), False).to_numpy(
        zero_copy_only=False)
    if not odd.any():
        return caps
    mask = pa.array(odd)
    rows = pc.utf8_trim_whitespace(pc.filter(caps, mask))  # split keeps edge blanks: trim first
    return pc.replace_with_mask(caps, mask, pc.binary_join(pc.utf8_split_whitespace(rows), _SPACE))


def _offsets(caps: pa.LargeStringArray) -> np.ndarray:
    """The len + 1 offsets of a large_string array into its data buffer (a slice's own, not rebased)."""
    return np.frombuffer(caps.buffers()[1], np.int64)[caps.offset : caps.offset + len(caps) + 1]


def _maybe_odd(caps: pa.LargeStringArray) -> np.ndarray:
    """Rows that may hold whitespace other than single inner spaces: a byte below 0x20 or above 0x7F (every
    whitespace but the space is one of those in UTF-8), two spaces in a row, or a space at an edge. A superset
    of `_ODD_SPACE`'s matches, found with a few numpy passes over the bytes instead of a regex per row."""
    n = len(caps)
    if n == 0 or caps.buffers()[2] is None:
        return np.zeros(n, bool)
    offsets = _offsets(caps)
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(caps.buffers()[2], np.uint8)[lo:hi]
    space = data == 32
    flag = (data - np.uint8(32)) >= 96  # wraps below 0x20: control bytes and non-ASCII alike
    flag[:-1] |= space[:-1] & space[1:]
    rows = np.searchsorted(offsets, np.flatnonzero(flag) + lo, side="right") - 1
    starts, ends = offsets[:-1] - lo, offsets[1:] - lo
    some = ends > starts
    maybe = np.zeros(n, bool)
    maybe[rows] = True
    maybe[some] |= space[starts[some]] | space[ends[some] - 1]
    return maybe


class Tokens:
    """Whitespace tokens of a caption column: flat values and per-row offsets/lengths (0 for null or blank)."""

    def __init__(self, captions: pa.Array) -> None:
        text = single_spaced(captions)
        text = pc.if_else(pc.equal(pc.binary_length(text), 0), pa.scalar(None, pa.large_string()), text)
        lists = pc.split_pattern(text, " ")
        self.flat = pc.list_flatten(lists)
        self.lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)
        self.starts = np.cumsum(self.lengths) - self.lengths

    def take(self, rows: np.ndarray) -> Tokens:
        """The tokens of rows `rows` (sharing the flat values)."""
        out = object.__new__(Tokens)
        out.flat, out.lengths, out.starts = self.flat, self.lengths[rows], self.starts[rows]
        return out

    @property
    def active(self) -> np.ndarray:
        return self.lengths > 0


def _insert(captions: pa.Array, tokens: Tokens, rows: np.ndarray, words: list[pa.Array],
            stream: np.ndarray) -> pa.Array:
    """Insert words[i][r] into caption r (for r in `rows`) at gaps drawn from `stream` (draws 100 + i).

    No sort: with k words per row, a token's output position is its index plus the number of words placed in
    gaps at or before it, and a word's is its gap plus the tokens before the gap plus the words placed
    earlier (smaller gap, or the same gap and an earlier draw) - O(tokens x k) array arithmetic."""
    if len(rows) == 0:
        return captions
    k = len(words)
    lengths = tokens.lengths[rows]
    m = len(rows)
    gaps = np.stack([draw(stream[rows], 100 + i, lengths + 1) for i in range(k)], axis=1)  # (m, k)
    out_len = lengths + k
    out_start = np.cumsum(out_len) - out_len
    total_tok = int(lengths.sum())
    tok_j = within(lengths)
    tok_dest = np.repeat(out_start, lengths) + tok_j  # plus the words placed before token j:
    for c in range(k):
        tok_dest += np.repeat(gaps[:, c], lengths) <= tok_j
    before = (gaps[:, None, :] < gaps[:, :, None]) | (
        (gaps[:, None, :] == gaps[:, :, None]) & (np.arange(k)[None, None, :] < np.arange(k)[None, :, None]))
    word_dest = out_start[:, None] + gaps + before.sum(axis=2)  # (m, k)
    tok_src = np.repeat(tokens.starts[rows], lengths) + tok_j
    # gather: out[dest] = source; sources are [tokens..., words (word-major: i * m + r)]
    source = np.empty(total_tok + m * k, np.int64)
    source[tok_dest] = tok_src
    source[word_dest.T.reshape(-1)] = len(tokens.flat) + np.arange(m * k)
    values = pa.concat_arrays([tokens.flat] + [w.cast(pa.large_string()) for w in words]).take(pa.array(source))
    offsets = np.concatenate([[0], np.cumsum(out_len)]).astype(np.int64)
    joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), values), _SPACE)
    joined = _keep_whitespace(_strings(captions).take(pa.array(rows)), joined, gaps, words)
    if m == len(captions):
        return joined
    mask = np.zeros(len(captions), bool)
    mask[rows] = True
    return pc.replace_with_mask(_strings(captions), pa.array(mask), joined)


def _keep_whitespace(originals: pa.LargeStringArray, joined: pa.Array, gaps: np.ndarray,
                     words: list[pa.Array]) -> pa.Array:
    """`joined` (tokens re-joined with single spaces), with the rows whose caption is not single-spaced spliced
    instead, so their own whitespace survives the insertion."""
    maybe = np.flatnonzero(_maybe_odd(originals))
    if len(maybe) == 0:
        return joined
    sub = originals.take(pa.array(maybe))
    odd = maybe[pc.fill_null(pc.not_equal(single_spaced(sub), sub), False).to_numpy(zero_copy_only=False)]
    if len(odd) == 0:
        return joined
    texts = originals.take(pa.array(odd)).to_pylist()
    ws = [w.take(pa.array(odd)).to_pylist() for w in words]
    spliced = [_splice(t, gaps[r], [str(w[j]) for w in ws]) for j, (r, t) in enumerate(zip(odd, texts, strict=True))]
    done = [s if s is not None else joined[int(r)].as_py() for s, r in zip(spliced, odd, strict=True)]
    mask = np.zeros(len(joined), bool)
    mask[odd] = True
    return pc.replace_with_mask(_strings(joined), pa.array(mask), pa.array(done, pa.large_string()))


_TOKEN = re.compile(r"\S+")


def _splice(text: str, gaps: np.ndarray, words: list[str]) -> str | None:
    """`words` put into `text` at token gaps `gaps` (gap g: before token g; len: after the last), each with one
    space on its token's side; the rest of `text` unchanged. None if Python's whitespace splits `text` into other
    tokens than Arrow's (the caller keeps the re-joined text then)."""
    spans = [m.span() for m in _TOKEN.finditer(text)]
    n = len(spans)
    if n == 0 or len(text.split()) != n or int(np.max(gaps)) > n:
        return None
    order = sorted(range(len(words)), key=lambda i: (int(gaps[i]), i))
    out, pos = [], 0
    for g in range(n + 1):
        here = [words[i] for i in order if int(gaps[i]) == g]
        if not here:
            continue
        if g < n:
            start = spans[g][0]
            out.append(text[pos:start] + " ".join(here) + " ")
            pos = start
        else:
            end = spans[-1][1]
            out.append(text[pos:end] + " " + " ".join(here))
            pos = end
    out.append(text[pos:])
    return "".join(out)


def _rows(tokens: Tokens, only: np.ndarray | None) -> np.ndarray:
    ok = tokens.active if only is None else tokens.active & only
    return np.flatnonzero(ok)


def _english(captions: pa.Array, rows: np.ndarray) -> np.ndarray:
    """Which of `rows` hold English captions (curate/captions/protect.py judges; over those rows only)."""
    from curate.captions.protect import english

    if len(rows) == 0:
        return np.zeros(0, bool)
    return english(_strings(captions).take(pa.array(rows)))


def rt(captions: pa.Array, stream: np.ndarray, vocab: pa.Array, n: int = 2, only: np.ndarray | None = None,
       tokens: Tokens | None = None) -> pa.Array:
    """Random token addition: n vocabulary words at random gaps; not into captions that are not English (the
    vocabularies are English words; curate/captions/protect.py judges the language)."""
    tokens = tokens or Tokens(captions)
    rows = _rows(tokens, only) if len(vocab) else np.zeros(0, np.int64)
    rows = rows[_english(captions, rows)]
    words = [vocab.take(pa.array(draw(stream[rows], i, len(vocab)))) for i in range(n)]
    return _insert(captions, tokens, rows, words, stream)


def cwr(captions: pa.Array, stream: np.ndarray, n: int = 2, only: np.ndarray | None = None,
        tokens: Tokens | None = None) -> pa.Array:
    """Caption word repetition: n of the caption's own tokens, repeated at random gaps."""
    tokens = tokens or Tokens(captions)
    rows = _rows(tokens, only)
    words = [tokens.flat.take(pa.array(tokens.starts[rows] + draw(stream[rows], i, tokens.lengths[rows]))) for i in range(n)]
    return _insert(captions, tokens, rows, words, stream)


def rna(captions: pa.Array, stream: np.ndarray, only: np.ndarray | None = None,
        tokens: Tokens | None = None) -> pa.Array:
    """Random number addition: a number in 0..99,999 at a random gap."""
    tokens = tokens or Tokens(captions)
    rows = _rows(tokens, only)
    number = pc.cast(pa.array(draw(stream[rows], 0, 100_000)), pa.large_string())
    return _insert(captions, tokens, rows, [number], stream)


def rc(captions: pa.Array, stream: np.ndarray, vocab: pa.Array, n: int = 4, only: np.ndarray | None = None,
       tokens: Tokens | None = None) -> pa.Array:
    """Random caption replacement, as the research does it: n random vocabulary words instead of the caption
    (a caption with no words, or an empty vocabulary, stays as it is)."""
    tokens = tokens or Tokens(captions)
    rows = _rows(tokens, only)
    out = _strings(captions)
    if len(rows) == 0 or len(vocab) == 0:
        return out
    words = [vocab.cast(pa.large_string()).take(pa.array(draw(stream[rows], 1 + i, len(vocab)))) for i in range(n)]
    flat = pa.concat_arrays(words).take(pa.array(
        (np.arange(n)[None, :] * len(rows) + np.arange(len(rows))[:, None]).reshape(-1)))
    made = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(np.arange(len(rows) + 1) * n), flat), _SPACE)
    mask = np.zeros(len(captions), bool)
    mask[rows] = True
    return pc.replace_with_mask(out, pa.array(mask), made)


def normalize(captions: pa.Array) -> pa.Array:
    """The caption normaliser of curate (dedup's caption counts, recaption's pool dedupe and report): NFKC,
    lower case, single spaces, edge characters that are neither letters nor digits removed, in any script."""
    caps = _strings(captions)
    ascii_rows = pc.fill_null(pc.string_is_ascii(caps), True)
    # ASCII text is its own NFKC form: Unicode's tables only for the other rows. (pyarrow 26's ascii_lower breaks
    # the offsets of a large_string array whose offsets do not start at 0, such as a cast of a slice: utf8_lower
    # there.)
    t = pc.ascii_lower(caps) if _offsets(caps)[0] == 0 else pc.utf8_lower(caps)
    if not pc.all(ascii_rows).as_py():
        other = pc.invert(ascii_rows)
        t = pc.replace_with_mask(t, other, pc.utf8_lower(pc.utf8_normalize(pc.filter(caps, other), "NFKC")))
        ascii_rows = pc.fill_null(pc.string_is_ascii(t), True)  # NFKC makes some rows ASCII (full-width letters)
    t = single_spaced(t)
    trimmed = pc.ascii_trim(t, _ASCII_NOT_ALNUM)  # the same as the regex below on ASCII text, 20x faster
    if pc.all(ascii_rows).as_py():
        return trimmed
    other = pc.invert(ascii_rows)
    edges = pc.replace_substring_regex(pc.filter(t, other), r"^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$", "")
    return pc.replace_with_mask(trimmed, other, edges)


def not_blank(values: pa.Array) -> np.ndarray:
    """True where the text has a character other than whitespace (null and blank: False)."""
    blank = pc.or_(pc.equal(pc.binary_length(values), 0), pc.utf8_is_space(values))  # is_space: all, and >= 1
    return pc.invert(pc.fill_null(blank, True)).to_numpy(zero_copy_only=False)


def text_codes(texts: pa.Array) -> np.ndarray:
    """An integer per row, equal exactly where the normalised texts are equal (null counts as the empty text)."""
    enc = pc.fill_null(normalize(texts), "").dictionary_encode()
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def first_distinct(groups: np.ndarray, texts: pa.Array) -> np.ndarray:
    """Row indices of the first row of each (group, normalised text), in row order."""
    return first_of(groups, text_codes(texts))


def first_of(groups: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Row indices of the first row of each (group, code), in row order."""
    order = np.lexsort((np.arange(len(codes)), codes, np.asarray(groups)))
    g, c = np.asarray(groups)[order], codes[order]
    start = np.ones(len(order), bool)
    start[1:] = (g[1:] != g[:-1]) | (c[1:] != c[:-1])
    return np.sort(order[start])


def within(lengths: np.ndarray) -> np.ndarray:
    """For groups of `lengths` laid end to end: each element's position inside its group (0, 1, ..)."""
    lengths = np.asarray(lengths, np.int64)
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
