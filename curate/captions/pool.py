"""Multi-caption pools (MC) and which samples get them (targeting by duplication), over whole Arrow columns.

A targeted sample's pool: its own caption, then its cluster's other captions, then what models made for it
(captions of its image, paraphrases of its caption), then variants of its own caption made by operations drawn uniformly from `op_names` (seeded by key and attempt), each entry kept only when no
earlier entry has the same normalised text, until `pool_size` entries or 4 x pool_size attempts. One entry is
then picked (uniform, seeded by key) among the row's own caption and its variants - never a cluster mate's
caption or a model's entry, which is the same for every copy of one image, so copies whose captions already
differ keep them apart - as the one to use when a single caption is
wanted, and moved to the front; the others keep their order. Untargeted samples keep `[caption]`; a null caption gets an empty pool, an empty
or blank one `[caption]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.captions import batch, ops, protect

TARGETS = ("all", "duplicates", "risk")
MODEL_SOURCES = ("caption_model", "paraphrase_model")  # entries made by models (curate/captions/models.py)
HOW = ("original", "cluster", *ops.OPS, *MODEL_SOURCES)  # how a pool entry was made; `build_pools` returns codes
_HOW = pa.array(HOW, pa.string())
_ORIGINAL, _CLUSTER = HOW.index("original"), HOW.index("cluster")


def targeted_mask(target: str, keys: pa.Array | np.ndarray, seed: int, dup_count: np.ndarray,
                  risk: np.ndarray) -> np.ndarray:
    """all: every row; duplicates: rows in clusters of 2 or more; risk: with probability = memorization_risk."""
    if target == "all":
        return np.ones(len(dup_count), bool)
    if target == "duplicates":
        return np.asarray(dup_count) > 1
    if target == "risk":
        return batch.uniform(batch.streams(keys, seed, "target")) < np.nan_to_num(np.asarray(risk, np.float64))
    raise ValueError(f"unknown target {target!r}; one of {TARGETS}")


def apply_op(op: str, captions: pa.Array, keys: pa.Array, hashes: np.ndarray, seed: int, context: dict[str, Any],
             variant: int | np.ndarray, only: np.ndarray | None = None,
             tokens: batch.Tokens | None = None) -> pa.Array:
    """One operation over a caption column (rows outside `only` unchanged); paraphrase runs per row (WordNet).
    `variant`: one for all rows or one per row; `tokens`: the column's `batch.Tokens`, when the caller has them."""
    stream = batch.streams(hashes, seed, op, variant)
    if op == "rt":
        return batch.rt(captions, stream, ops.arrow_vocab(context["vocab"]), n=context.get("n", 2), only=only,
                        tokens=tokens)
    if op == "cwr":
        return batch.cwr(captions, stream, n=context.get("n", 2), only=only, tokens=tokens)
    if op == "rna":
        return batch.rna(captions, stream, only=only, tokens=tokens)
    if op == "rc":
        return batch.rc(captions, stream, ops.arrow_vocab(context.get("vocab", ())), n=context.get("rc_n", 4),
                        only=only, tokens=tokens)
    if op == "paraphrase":
        rows = np.flatnonzero(only) if only is not None else np.arange(len(captions))
        caps = captions.take(pa.array(rows)).to_pylist()
        ks = keys.take(pa.array(rows)).to_pylist()
        variants = np.broadcast_to(np.asarray(variant, np.int64), (len(captions),))[rows].tolist()
        english = protect.english(captions.take(pa.array(rows))).tolist()  # over the column, not per caption
        out = [ops.paraphrase(c, k, seed, context["wordnet"], k=context.get("k", 2),
                              multiword=context.get("multiword", False), variant=v, english=e)
               for c, k, v, e in zip(caps, ks, variants, english, strict=True)]
        mask = np.zeros(len(captions), bool)
        mask[rows] = True
        return pc.replace_with_mask(batch._strings(captions), pa.array(mask), pa.array(out, pa.large_string()))
    raise ValueError(f"unknown caption operation {op!r}; one of {', '.join(ops.OPS)}")


def build_pools(captions: pa.Array, keys: pa.Array, seed: int, cluster_captions: pa.Array | None,
                op_names: Sequence[str], pool_size: int, context: dict[str, Any], targeted: np.ndarray,
                cluster_norms: pa.Array | None = None, clean_lists: bool = False,
                extra: Sequence[tuple[str, pa.Array]] = ()) -> tuple[pa.Array, pa.Array, Normalised]:
    """(pools, how each entry was made, the grown pools' entries normalised), the caption to use first. How
    each entry was made is dictionary-encoded: int8 codes into `HOW` ("original", "cluster", the operations).

    `cluster_captions` is a list (or list-view) column with one list per targeted row, in row order (null where
    the cluster has no other captions); `cluster_norms` the same lists normalised when the caller has them, and
    `clean_lists` says no list holds a blank caption or one normalised text twice (what recaption's global step
    makes). `extra`: (how, list column with one list per targeted row) pairs, the models' entries, offered after
    the cluster's captions in that order. The work runs on the rows whose pool can grow (targeted, with a word) only, so its cost follows the
    targeted share; the others keep `[caption]`."""
    caps = batch._strings(captions)
    n = len(caps)
    targeted = np.asarray(targeted, bool)
    grow = targeted & batch.not_blank(caps) & (pool_size > 1)
    rows = np.flatnonzero(grow)
    alone = np.flatnonzero(~grow & ~caps.is_null().to_numpy(zero_copy_only=False))
    empty = pa.array([], pa.large_string())
    entries = _Entries(np.zeros(0, np.int64), np.zeros(0, np.int64), [], np.zeros(0, np.int64), np.zeros(0, np.int8),
                       empty, np.zeros(0, np.int32))
    if len(rows):
        at = pa.array(rows)
        mine = pa.array(np.flatnonzero(grow[targeted]))  # the grown rows among the targeted ones
        entries = _grow_pools(caps.take(at), batch._strings(keys).take(at), seed,
                              cluster_captions.take(mine) if cluster_captions is not None else None,
                              cluster_norms.take(mine) if cluster_norms is not None else None,
                              op_names, pool_size, context, clean_lists,
                              [(how, lists.take(mine)) for how, lists in extra])
    # every entry as (row, position): grown pools' entries, then `[caption]` for the rows that keep theirs; an
    # entry's place in the output is its row's offset plus its position (a scatter, no sort)
    row = np.concatenate([rows[entries.row], alone])
    count = np.bincount(row, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(count)])
    order = np.empty(len(row), np.int64)
    order[offsets[row] + np.concatenate([entries.pos, np.zeros(len(alone), np.int64)])] = np.arange(len(row))
    # one gather from the captions and what the grown entries point at: a row that keeps its caption reads it in
    # place, a mate's caption is read from the cluster list
    source = np.concatenate([n + entries.source, alone])[order]
    text = _gather([caps, *entries.chunks], source)
    how = np.concatenate([entries.how, np.full(len(alone), _ORIGINAL, np.int8)])[order]
    grown = order < len(entries.row)
    list_offsets = pa.array(offsets.astype(np.int32))
    return (pa.ListArray.from_arrays(list_offsets, text.cast(pa.string())),
            pa.ListArray.from_arrays(list_offsets, pa.DictionaryArray.from_arrays(pa.array(how), _HOW)),
            Normalised(np.flatnonzero(grown), entries.listed[order[grown]],
                       entries.norm.take(pa.array(_unlisted_rank(entries.listed, order[grown]))), len(order)))


def _group_starts(rows: np.ndarray, n: int) -> np.ndarray:
    """For ascending row numbers in [0, n): the index of each one's first occurrence (what
    searchsorted(rows, rows, "left") gives, in linear time)."""
    counts = np.bincount(rows, minlength=n)
    return (np.cumsum(counts) - counts)[rows]


def _unlisted_rank(listed: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """For the given entries, in order, those with listed -1: their rank among all entries with listed -1."""
    rank = np.cumsum(listed < 0) - 1
    return rank[entries[listed[entries] < 0]]


class Normalised:
    """What the report needs of the pools' entries, by flat position in the pools' values: whether the entry's
    pool grew (`known`); its place in its row's cluster list where the pools were built from clean lists (mates'
    captions, and the row's own caption, which is in the list), else -1 (`places`); and, for the grown entries
    with place -1, the normalised text (`lookup`, from `text`, in position order). With clean lists an entry
    with place -1 is in no list of its cluster: a variant joins a pool only when the whole list did."""

    def __init__(self, at: np.ndarray, listed: np.ndarray, text: pa.Array, size: int) -> None:
        self.text = text
        self._listed = np.full(size, -2, np.int32)  # -2: the pool did not grow
        self._listed[at] = listed
        self._text_index = np.full(size, -1, np.int64)
        self._text_index[at[listed < 0]] = np.arange(len(text))

    def known(self, positions: np.ndarray) -> np.ndarray:
        return self._listed[positions] != -2

    def places(self, positions: np.ndarray) -> np.ndarray:
        return np.maximum(self._listed[positions], -1)

    def lookup(self, positions: np.ndarray) -> pa.Array:
        """The normalised text at each position: null where it is named by its list place or its pool did not
        grow."""
        k = self._text_index[positions]
        return self.text.take(pa.array(k, mask=k < 0))


def list_parts(lists: pa.Array) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(start, size, values) of each list of a list, large-list or list-view column: list i is
    values[start[i] : start[i] + size[i]] (size 0 for a null list); nothing is copied."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    if pa.types.is_list_view(lists.type) or pa.types.is_large_list_view(lists.type):
        start = lists.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        size = lists.sizes.to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        offsets = lists.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        start, size = offsets[:-1], np.diff(offsets)
    if lists.null_count:
        size = np.where(lists.is_null().to_numpy(zero_copy_only=False), 0, size)
    return start, size, lists.values


def list_entries(lists: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """Every entry of a list, large-list or list-view column, in order: (its row, its index into the values, its
    place in its list, the values)."""
    start, size, values = list_parts(lists)
    place = batch.within(size)
    return np.repeat(np.arange(len(size)), size), np.repeat(start, size) + place, place, values


def is_own(entries: pa.Array, texts: pa.Array, row: np.ndarray) -> np.ndarray:
    """Whether each list entry equals its row's text (`row`: each entry's row; a null on either side: no)."""
    same = pc.equal(batch._strings(entries), batch._strings(texts).take(pa.array(row)))
    return pc.fill_null(same, False).to_numpy(zero_copy_only=False)


def how_codes(made: pa.Array) -> np.ndarray:
    """The int8 codes (into `HOW`) of `build_pools`' how-each-entry-was-made column, flat."""
    return made.values.indices.to_numpy(zero_copy_only=False)


def changed(made: pa.Array) -> np.ndarray:
    """Whether each row's caption to use (its pool's first entry) is not its own caption: the first entry is a
    variant (a mate's caption is never first). False for an empty pool."""
    offsets = made.offsets.to_numpy()
    some = offsets[1:] > offsets[:-1]
    out = np.zeros(len(made), bool)
    out[some] = how_codes(made)[offsets[:-1][some]] != _ORIGINAL
    return out


def entries_by_op(made: pa.Array) -> dict[str, int]:
    """How many pool entries each way made (original, cluster, the operations), the ones that made any."""
    counts = np.bincount(how_codes(made), minlength=len(HOW))
    return {h: int(c) for h, c in zip(HOW, counts, strict=True) if c}


def _gather(parts: list[pa.Array], at: np.ndarray) -> pa.Array:
    """concat(parts).take(at) without building the concatenation (one large buffer fewer)."""
    return pa.chunked_array(parts).take(pa.array(at)).combine_chunks()


class _Lazy:
    """values.take(pick), never taken: the candidates that join are read from `values` by the final gather."""

    def __init__(self, values: pa.Array, pick: np.ndarray) -> None:
        self.values, self.pick = values, pick


class _Entries:
    """Pool entries of a batch of rows, flat: row, position in the pool, text (`source`: an index into the
    concatenation of `chunks`, not copied yet), how it was made (a `HOW` code), place in the row's cluster list
    (`listed`; -1: not a list entry, or not known) and, for the entries with listed -1 (in order), the normalised
    text (`norm`)."""

    def __init__(self, row: np.ndarray, pos: np.ndarray, chunks: list[pa.Array], source: np.ndarray,
                 how: np.ndarray, norm: pa.Array, listed: np.ndarray) -> None:
        self.row, self.pos, self.chunks, self.source = row, pos, chunks, source
        self.how, self.norm, self.listed = how, norm, listed


def _fresh(have_row: np.ndarray, have_norm: pa.Array, row: np.ndarray, norm: pa.Array) -> np.ndarray:
    """For candidates (row, normalised text) in order: True where the text is in neither the row's entries
    (`have_*`) nor an earlier candidate of the row."""
    codes = pa.concat_arrays([have_norm, norm]).dictionary_encode().indices.to_numpy(zero_copy_only=False)
    rows = np.concatenate([have_row, row]).astype(np.int64)
    order = np.argsort(rows * (int(codes.max(initial=0)) + 1) + codes, kind="stable")  # entries come first
    key = rows[order] * (int(codes.max(initial=0)) + 1) + codes[order]
    first = np.ones(len(order), bool)
    first[1:] = key[1:] != key[:-1]
    ok = np.zeros(len(rows), bool)
    ok[order[first]] = True
    return ok[len(have_row):]


def _grow_pools(caps: pa.LargeStringArray, keys: pa.Array, seed: int, cluster_captions: pa.Array | None,
                cluster_norms: pa.Array | None, op_names: Sequence[str], pool_size: int,
                context: dict[str, Any], clean_lists: bool = False,
                extra: Sequence[tuple[str, pa.Array]] = ()) -> _Entries:
    """`build_pools` for rows that all get a pool (targeted, each with at least one word).

    Rounds of candidates, each row's in its order: first the cluster's captions, then the models' entries, then
    variants (attempt a's operation drawn by (seed, key, a)), as many attempts per round as the row has room left; a candidate joins
    when no entry or earlier candidate of the row has its normalised text. A row's pool is thus what offering
    its candidates one at a time would give, whatever else is in the batch."""
    keys = batch._strings(keys)
    n = len(caps)
    hashes = batch.key_hashes(keys)
    row, hows = [np.arange(n)], [np.full(n, _ORIGINAL, np.int8)]
    chunks, sources = [caps], [np.arange(n)]  # entries' texts: indices into the concatenated chunks
    placed: dict[int, int] = {}  # where a chunk starts, by id
    owns = [np.ones(n, bool)]  # the row's own caption or a variant of it (not a cluster mate's caption)
    listed = [np.full(n, -1, np.int32)]  # the entry's place in its row's cluster list, where known (clean lists)
    norms = [batch.normalize(caps)]
    count = np.ones(n, np.int64)

    def offer(cand_row: np.ndarray, cand: pa.Array, how: np.ndarray, norm: pa.Array | None = None,
              mates: bool = False, fresh: np.ndarray | None = None, places: np.ndarray | None = None) -> None:
        """Candidates in order (rows ascending, each row's in its order); joins the fresh ones while there is room.
        `fresh`, when the caller knows it: which candidates are neither blank nor in their row's pool yet;
        `places`: each candidate's place in its row's cluster list."""
        if fresh is None:
            keep = batch.not_blank(cand)
            ok = pa.array(keep)
            cand_row, cand, how = cand_row[keep], cand.filter(ok), how[keep]
            norm = batch.normalize(cand) if norm is None else batch._strings(norm).filter(ok)
            live = np.zeros(n, bool)
            live[cand_row] = True
            mine = [live[r] for r in row]  # the entries of the rows with candidates, part by part (no copy of all)
            fresh = _fresh(np.concatenate([r[m] for r, m in zip(row, mine, strict=True)]),
                           pa.concat_arrays([t.filter(pa.array(m)) for t, m in zip(norms, mine, strict=True)]),
                           cand_row, norm)
        # room: the row's k-th fresh candidate joins while count + k < pool_size
        idx = np.flatnonzero(fresh)
        r = cand_row[idx]
        rank = np.arange(len(r)) - _group_starts(r, n)
        idx = idx[count[r] + rank < pool_size]
        at = pa.array(idx)
        row.append(cand_row[idx])
        owns.append(np.full(len(idx), not mates))
        values, pick = (cand.values, cand.pick) if isinstance(cand, _Lazy) else (cand, None)
        if id(values) not in placed:
            placed[id(values)] = sum(len(c) for c in chunks)
            chunks.append(values)
        sources.append(placed[id(values)] + (pick[idx] if pick is not None else idx))
        hows.append(how[idx])
        listed.append(places[idx] if places is not None else np.full(len(idx), -1, np.int32))
        norms.append(norm.take(at))
        np.add.at(count, cand_row[idx], 1)

    if cluster_captions is not None:
        cand_row, flat, places, values = list_entries(cluster_captions)
        pick = pa.array(flat)
        label = np.full(len(cand_row), _CLUSTER, np.int8)
        if clean_lists and cluster_norms is not None:  # only the row's own caption can repeat one: no hashing
            norm = batch._strings(list_parts(cluster_norms)[2].take(pick))
            own = is_own(norm, norms[0], cand_row)
            places = places.astype(np.int32)
            listed[0][cand_row[own]] = places[own]  # the row's own caption is that entry of the list
            offer(cand_row, _Lazy(batch._strings(values), flat), label, norm, mates=True, fresh=~own, places=places)
        elif len(cand_row):
            offer(cand_row, batch._strings(values.take(pick)), label,
                  list_parts(cluster_norms)[2].take(pick) if cluster_norms is not None else None, mates=True)

    for how_name, lists in extra:  # the models' entries: never the caption to use (the same for every copy)
        cand_row, flat, _, values = list_entries(lists)
        if len(cand_row):
            offer(cand_row, batch._strings(values.take(pa.array(flat))),
                  np.full(len(cand_row), HOW.index(how_name), np.int8), mates=True)

    attempt = np.zeros(n, np.int64)  # each row's next attempt
    # split into words once, shared by every operation and attempt: only the rows with room for variants
    need = np.flatnonzero(count < pool_size) if op_names else np.zeros(0, np.int64)
    tokens = batch.Tokens(caps.take(pa.array(need)))
    token_row = np.zeros(n, np.int64)
    token_row[need] = np.arange(len(need))
    while op_names:
        want = np.where(attempt < 4 * pool_size, np.minimum(pool_size - count, 4 * pool_size - attempt), 0)
        if not want.any():
            break
        v_row = np.repeat(np.arange(n), want)  # one virtual row per (row, attempt), rows ascending
        v_att = attempt[v_row] + batch.within(want)
        attempt += want
        which = batch.draw(batch.streams(hashes[v_row], seed, "pool", v_att), 0, len(op_names))
        cand = pa.nulls(len(v_row), pa.large_string())
        how = np.zeros(len(v_row), np.int8)
        for o, op in enumerate(op_names):
            sel = which == o
            if not sel.any():
                continue
            r, at = v_row[sel], pa.array(v_row[sel])
            variant = apply_op(op, caps.take(at), keys.take(at), hashes[r], seed, context, v_att[sel],
                               tokens=tokens.take(token_row[r]))
            mask = pa.array(sel)
            cand = pc.replace_with_mask(cand, mask, variant)
            how[sel] = HOW.index(op)
        offer(v_row, cand, how)

    # the caption to use goes first, the others keep their order: drawn by key among the row's own caption and
    # its variants, never a cluster mate's caption (members whose captions already differ would then collide)
    all_row = np.concatenate(row)
    order = np.argsort(all_row, kind="stable")
    all_row, own = all_row[order], np.concatenate(owns)[order]
    start = _group_starts(all_row, n)
    slot = np.arange(len(all_row)) - start
    seen = np.cumsum(own)  # own entries so far, over all rows
    rank = seen - 1 - (seen - own)[start]  # among the row's own entries
    draw = batch.draw(batch.streams(hashes, seed, "pick"), 0, np.bincount(all_row, own, n).astype(np.int64))
    first = np.zeros(n, np.int64)
    hit = own & (rank == draw[all_row])
    first[all_row[hit]] = slot[hit]
    pos = np.where(slot == first[all_row], 0, slot + (slot < first[all_row]))
    places = np.concatenate(listed)[order]
    return _Entries(all_row, pos, chunks, np.concatenate(sources)[order], np.concatenate(hows)[order],
                    _gather(norms, order[places < 0]), places)  # list entries are named by their place


def build_pool(caption: str | None, key: str, seed: int, cluster_captions: Sequence[str], op_names: Sequence[str],
               pool_size: int, context: dict[str, Any], targeted: bool = True) -> tuple[list[str], list[str]]:
    """One sample's (pool, how each entry was made): `build_pools` on a one-row column."""
    clusters = pa.array([list(cluster_captions) or None] if targeted else [], pa.list_(pa.string()))
    pools, how, _ = build_pools(pa.array([caption], pa.string()), pa.array([key]), seed, clusters, op_names,
                                pool_size, context, np.array([targeted]))
    return pools[0].as_py(), how[0].as_py()
