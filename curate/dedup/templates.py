"""Template-framed images: a picture inside a frame that many unrelated images share (a screenshot of a web
page, a meme's caption bar, stripes). Global image features see the frame more than the picture, so framed
copies sit next to each other instead of next to their source (bench/copydetect.py: 0 of 72 screenshots).

Found by pixels, not features: an image is framed when at least `min_mates` of its nearest neighbours (by the
global features, same aspect ratio) agree with it pixel for pixel on a large part (the frame, 20-97% of the
area) and differ from it elsewhere (the picture). Two more tests keep look-alikes out: the frame has structure
(text, icons, edges; clip-art on a flat background agrees with other clip-art's background, but that is no
frame, and flat white stripes are not found either), and inside the picture's box the mates agree with it on
at most half the pixels (copies of one photo with overlays at different places agree around the overlays).
White bands laid over a picture - a meme's caption bar, stripes - have no texture for that test; they are
found in the image alone (`overlay_bands`: full-width white rows in the shapes those overlays take) and are
framed too. And an image that shares a framed neighbour's whole frame, while no neighbour shows its picture,
takes that frame (its own mates' pictures may agree too much for the test: clip-art on white in one slot).
The picture's bounding box is cropped from the full image, band rows across its full width are cut out, other
frame pixels inside the box are inpainted (OpenCV's Telea), and the crop is embedded again: the content
vector. `rescore` then compares a framed image by its content vector (against the global vectors of the
others, and against the content vectors of other framed images only), so unrelated images in one frame stop
linking and a framed copy can find its source.

Cost: one thumbnail per image with candidates (WORK px, grey), `k` pixel comparisons each, and one more
embedding per framed image.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

WORK = 160  # long edge of the grey thumbnails compared pixel for pixel
AGREE = 10  # grey levels (0-255) within which two pixels agree
MATE_AGREEMENT = (0.3, 0.95)  # a mate agrees on this share of the pixels: a shared frame, not a copy
TEMPLATE_SHARE = (0.2, 0.97)  # the frame covers this share of the image
MIN_CONTENT = 0.02  # the picture covers at least this share
MAX_PICTURE_AGREEMENT = 0.5  # inside the picture's box the mates agree with it on at most this share (median)
MIN_FRAME_TEXTURE = 4.0  # mean |Laplacian| inside the frame (frame_texture); a flat background is no frame
SHARED_FRAME = 0.9  # an unframed row takes a framed neighbour's frame when it agrees on this share of it
SHARED_PICTURE = 0.85  # ... and agrees with its picture on at most this share (else it is a copy of that picture)
WHITE = 230  # grey level from which a thumbnail pixel counts as white (overlay bands)
FLAT_ROW = 0.97  # a row of an overlay band: this share of its pixels white, across the full width
_OPEN = np.ones((5, 5), np.uint8)  # the opening that tells a region from noise


@dataclass
class Thumb:
    grey: np.ndarray  # uint8, long edge WORK
    aspect: float  # width / height of the full image


def thumb(img: Image.Image) -> Thumb:
    import cv2

    w, h = img.size
    scale = WORK / max(w, h)
    small = (img if img.mode == "L" else img.convert("L")).resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.BOX)
    return Thumb(cv2.GaussianBlur(np.asarray(small), (3, 3), 0), w / max(h, 1))


@dataclass
class Match:
    """`me` against one neighbour, compared once: where the grey thumbnails agree, and whether they are the
    same picture (the disagreement is noise - JPEG blocks, resampling - gone after a 5 x 5 opening - rather
    than a region, as a frame's mates disagree in the picture's box)."""

    agree: np.ndarray
    same: bool
    share: float  # of the pixels that agree


def compare(me: Thumb, other: Thumb) -> Match | None:
    """None when the aspect ratios differ (no pixel comparison then)."""
    import cv2

    if abs(other.aspect - me.aspect) > 0.03 * me.aspect:
        return None
    h, w = me.grey.shape
    b = other.grey if other.grey.shape == (h, w) else cv2.resize(other.grey, (w, h), interpolation=cv2.INTER_AREA)
    differ = cv2.threshold(cv2.absdiff(me.grey, b), AGREE, 1, cv2.THRESH_BINARY)[1]  # 1 where they differ
    differing = cv2.countNonZero(differ)
    same = differing <= 0.4 * differ.size and cv2.countNonZero(
        cv2.morphologyEx(differ, cv2.MORPH_OPEN, _OPEN)) < MIN_CONTENT * differ.size
    return Match(differ == 0, bool(same), (differ.size - differing) / differ.size)


def _frame(me: Thumb, matches: Sequence[Match | None], min_mates: int) -> tuple[np.ndarray, tuple] | None:
    """(frame mask, picture box) when `me` is framed, from its comparisons with its neighbours."""
    agreeing = [m.agree for m in matches if m is not None and not m.same
                and MATE_AGREEMENT[0] <= m.share <= MATE_AGREEMENT[1]]
    if len(agreeing) < min_mates:
        return None
    frame = np.sum(agreeing, axis=0) >= min_mates
    if not TEMPLATE_SHARE[0] <= frame.mean() <= TEMPLATE_SHARE[1]:
        return None
    box = content_box(frame)
    if frame_texture(me.grey, frame) < MIN_FRAME_TEXTURE or box is None:
        return None
    # the mates must show another picture in the box: copies of one photo with a caption, an emoji or a text
    # overlay at different places agree with each other around the overlays, unrelated pictures do not
    inside = np.median([m[pixels(box, *frame.shape)].mean() for m in agreeing])
    return (frame, box) if inside <= MAX_PICTURE_AGREEMENT else None


def frame_texture(grey: np.ndarray, frame: np.ndarray) -> float:
    """Mean |Laplacian| over the frame's pixels 2 px or more off its edge: text, icons and edges drawn on the
    frame count, the edges where a picture meets a plain background (clip-art on white, a star field on black)
    are the picture's. Measured over the whole mask, they made those backgrounds frames: on bench/copydetect.py's
    development light set, which has no template, 91 rows were framed; 17 with the interior measure, while all
    143 framed template copies of the development stacked set stay framed."""
    import cv2

    interior = cv2.erode(frame.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    if not interior.any():
        return 0.0
    return float(np.abs(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F))[interior].mean())


def overlay_bands(grey: np.ndarray) -> np.ndarray | None:
    """Full-width white bands laid over a picture, found in one image (no mates needed): a caption bar on top
    (white rows, then one or more short text blocks each followed by white rows; a meme) and stripes (two or
    more runs of white rows, each >= 3% of the height, neither touching the top nor the bottom edge, together
    15-70% of it). The mask of the band rows, or None. A picture's own white background reaches its edges and
    has no text blocks between white runs, so it is neither."""
    h = grey.shape[0]
    flat = np.count_nonzero(grey >= WHITE, axis=1) >= FLAT_ROW * grey.shape[1]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat.astype(np.int8))) + 1, [h]])
    runs = [(int(a), int(b), bool(flat[a])) for a, b in itertools.pairwise(bounds)]
    mask = np.zeros(grey.shape, bool)
    top, q = 0, 1
    if runs and runs[0][2] and runs[0][1] >= 2:
        while (q + 1 < len(runs) and not runs[q][2] and runs[q][1] - runs[q][0] <= 0.15 * h and runs[q + 1][2]
               and runs[q + 1][1] - runs[q + 1][0] >= 2):
            top, q = runs[q + 1][1], q + 2
    if 0.08 * h <= top <= 0.85 * h:
        mask[:top] = True
    else:
        top = 0
    stripes = [(a, b) for a, b, f in runs if f and a > max(top, 0) and b < h and b - a >= 0.03 * h]
    if len(stripes) >= 2 and 0.15 <= sum(b - a for a, b in stripes) / h <= 0.7:
        for a, b in stripes:
            mask[a:b] = True
    return mask if mask.any() else None


def band_frame(grey: np.ndarray) -> tuple[np.ndarray, tuple] | None:
    """(band mask, picture box) when white bands lie over the picture in this thumbnail (`overlay_bands`), else
    None: the form the scan gives a framed row."""
    bands = overlay_bands(grey)
    box = content_box(bands) if bands is not None else None
    return (bands, box) if box is not None else None


def pixels(box: tuple[float, float, float, float], h: int, w: int) -> tuple[slice, slice]:
    """A picture box (x0, y0, x1, y1 as shares of width and height) as (rows, columns) slices of an h x w
    image, at least one pixel each way."""
    y0, x0 = min(round(box[1] * h), h - 1), min(round(box[0] * w), w - 1)
    return slice(y0, max(round(box[3] * h), y0 + 1)), slice(x0, max(round(box[2] * w), x0 + 1))


def content_box(frame: np.ndarray) -> tuple[float, float, float, float] | None:
    """The picture's bounding box (x0, y0, x1, y1, as shares of width and height), or None when too small."""
    import cv2

    picture = cv2.morphologyEx((~frame).astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    ys, xs = np.nonzero(picture)
    h, w = frame.shape
    if len(ys) < MIN_CONTENT * h * w:
        return None
    return xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h


def content_image(img: Image.Image, frame: np.ndarray, box: tuple[float, float, float, float]) -> Image.Image:
    """The picture cropped from the full image: rows the frame covers across the full width (stripes) removed,
    other frame pixels inpainted. Removing a band keeps the picture's own pixels side by side, where inpainting
    a band 10% of the height tall smears it (bench/copydetect.py: striped copies with their source 18% -> 56%)."""
    import cv2

    full = np.asarray(img.convert("RGB"))
    crop = np.ascontiguousarray(full[pixels(box, *full.shape[:2])])
    inner = frame[pixels(box, *frame.shape)]
    mask = cv2.resize(inner.astype(np.uint8), (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_NEAREST)
    band = mask.all(1) if mask.size else np.zeros(0, bool)
    if band.any():  # at full size: the white rows in and next to the thumbnail's bands (the blur softens edges)
        reach = int(np.ceil(2 * crop.shape[0] / max(inner.shape[0], 1)))
        near = np.convolve(band, np.ones(2 * reach + 1), "same") > 0
        grey = np.asarray(Image.fromarray(crop).convert("L"))
        band = near & ((grey >= WHITE).mean(1) >= FLAT_ROW)
    if band.any() and not band.all():
        crop, mask = np.ascontiguousarray(crop[~band]), np.ascontiguousarray(mask[~band])
    if crop.size and mask.mean() > 0.02:
        crop = cv2.inpaint(crop, mask, 3, cv2.INPAINT_TELEA)
    return Image.fromarray(crop)


def neighbours(i: np.ndarray, j: np.ndarray, sim: np.ndarray, n: int, k: int) -> list[np.ndarray]:
    """Each row's k most similar rows among the candidate pairs."""
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    s = np.concatenate([sim, sim])
    order = np.lexsort((-s, src))
    src, dst = src[order], dst[order]
    start = np.searchsorted(src, np.arange(n + 1))
    return [dst[start[r] : min(start[r + 1], start[r] + k)] for r in range(n)]


@dataclass
class Pass:
    """What `apply` found: the rescored pairs (i < j) at >= floor, the same-picture pair codes (`link_same`),
    the framed rows, and counts for the report."""

    i: np.ndarray
    j: np.ndarray
    score: np.ndarray
    same: np.ndarray
    frames: dict[int, tuple[np.ndarray, tuple]]  # framed row -> (frame mask, True on the frame; picture box)
    info: dict[str, int]


def scan(thumbs: dict[int, Thumb], near: list[np.ndarray], min_mates: int = 2,
         progress: Callable[[int], None] | None = None) -> tuple[dict[int, tuple[np.ndarray, tuple]], np.ndarray]:
    """Each row of `thumbs` against its neighbours (among `thumbs`), each (row, neighbour) compared once for
    both tests: {row: (frame mask, picture box)} for the framed rows, and the codes (i << 32 | j, i < j) of the pairs that are the same
    picture. A row that is not framed by its own mates but shares a framed neighbour's whole frame takes that
    frame (its mates' pictures were too alike for the test, e.g. clip-art on white in one screenshot slot)."""
    framed: dict[int, tuple[np.ndarray, tuple]] = {}
    same: set[int] = set()
    unframed: dict[int, list[tuple[int, Match]]] = {}
    for r, me in thumbs.items():
        mates = [m for m in near[r].tolist() if m in thumbs]
        matches = [compare(me, thumbs[m]) for m in mates]
        same.update(min(r, m) << 32 | max(r, m) for m, x in zip(mates, matches, strict=True) if x is not None and x.same)
        found = _frame(me, matches, min_mates) if len(mates) >= min_mates else None
        if found is None:  # no shared frame: white bands over the picture (a caption bar, stripes)?
            found = band_frame(me.grey)
        if found is not None:
            framed[r] = found
        else:
            unframed[r] = [(m, x) for m, x in zip(mates, matches, strict=True) if x is not None]
        if progress:
            progress(1)
    for r, matches in unframed.items():
        for m, x in matches:
            if m not in framed or x.same or framed[m][0].shape != x.agree.shape:
                continue
            frame, box = framed[m]
            if x.agree[frame].mean() < SHARED_FRAME:
                continue
            # in the picture's box no neighbour may show r's picture: copies of one photo, one of them with an
            # emoji the others lack, "share" that copy's frame (the photo) and differ only in its box (the emoji)
            inside = [o.agree[pixels(box, *frame.shape)] for _, o in matches if o.agree.shape == frame.shape]
            if max(a.mean() for a in inside) <= SHARED_PICTURE:
                framed[r] = framed[m]
                break
    return framed, np.array(sorted(same), np.int64)


def find_frames(i: np.ndarray, j: np.ndarray, sim: np.ndarray, n: int, k: int,
                load: Callable[[set[int], bool], Iterator[tuple[int, Image.Image]]],
                progress: Callable[[str, int], Callable[[int], None]] | None = None,
                ) -> tuple[dict[int, tuple[np.ndarray, tuple]], np.ndarray, int]:
    """The pixel scan over candidate pairs: thumbnails of every row with two or more neighbours (`load(rows,
    True)`; a row's mates are its neighbours among them), then `scan`. Returns the framed rows, the same-picture pair codes and how
    many rows were checked."""
    near = neighbours(i, j, sim, n, k)
    check = [r for r in range(n) if len(near[r]) >= 2]
    tick = progress("dedup templates: thumbnails", len(check)) if progress else None
    thumbs = {}
    for r, img in load(set(check), True):
        thumbs[r] = thumb(img)
        if tick:
            tick(1)
    framed, same = scan(thumbs, near, progress=progress("dedup templates: pixel tests", len(check)) if progress else None)
    return framed, same, len(check)


def apply(i: np.ndarray, j: np.ndarray, sim: np.ndarray, n: int, k: int, floor: float,
          load: Callable[[set[int], bool], Iterator[tuple[int, Image.Image]]],
          embed: Callable[[list[Image.Image]], np.ndarray],
          search: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
          vectors: Callable[[np.ndarray], np.ndarray],
          progress: Callable[[str, int], Callable[[int], None]] | None = None,
          ) -> Pass:
    """The whole template pass over candidate pairs (i, j, sim) of n rows: thumbnails of every row with two or
    more neighbours (`load(rows, True)`: decoded grey images, small is enough), the pixel scan,
    pictures of the framed rows (`load(rows, False)`: full images) embedded (`embed`, same space as `vectors`),
    their nearest rows (`search(queries)` -> (query index, row) pairs at >= floor), and the rescored pairs."""
    framed, same, checked = find_frames(i, j, sim, n, k, load, progress)
    content: dict[int, np.ndarray] = {}
    batch: list[tuple[int, Image.Image]] = []
    for r, img in itertools.chain(load(set(framed), False), [(-1, None)]):  # 32 pictures at a time, then the rest
        if img is not None:
            batch.append((r, content_image(img, *framed[r])))
        if batch and (len(batch) == 32 or img is None):
            content.update(zip([b for b, _ in batch], np.asarray(embed([c for _, c in batch]), np.float32),
                               strict=True))
            batch.clear()
    extra = None
    if content:
        order = np.array(sorted(content), np.int64)
        a, b = search(np.stack([content[r] for r in order.tolist()]))
        extra = (order[a], b)
    lo, hi, score = rescore(i, j, vectors, content, extra)
    keep = score >= floor
    info = {"checked": checked, "framed": len(framed), "embedded": len(content), "same_picture_pairs": len(same)}
    return Pass(lo[keep], hi[keep], score[keep], same, framed, info)


def link_same(i: np.ndarray, j: np.ndarray, score: np.ndarray, same: np.ndarray, strong: float) -> np.ndarray:
    """Scores where the pairs in `same` (codes from `scan`) are at least `strong`, so they link
    like near-identical copies: a large group of re-encoded copies stays whole under the mutual linkage whatever
    their features' similarity. Applied last (after hub scores, whose neighbourhood means it would inflate)."""
    if len(same) == 0 or len(i) == 0:
        return score
    hit = np.isin(np.minimum(i, j).astype(np.int64) << 32 | np.maximum(i, j), same)
    return np.where(hit, np.maximum(score, strong), score).astype(np.float32)


def rescore(i: np.ndarray, j: np.ndarray, vectors: Callable[[np.ndarray], np.ndarray], content: dict[int, np.ndarray],
            extra: tuple[np.ndarray, np.ndarray] | None = None,
            block: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of the candidate pairs (plus `extra` pairs, e.g. content vectors' neighbours) with framed rows
    compared by their picture: both framed, content . content; one framed, the larger of the global and the
    content-to-global similarity; neither, global. Returns unique (i < j, score)."""
    if extra is not None:
        i, j = np.concatenate([i, extra[0]]), np.concatenate([j, extra[1]])
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    keep = lo != hi
    code = np.unique(lo[keep].astype(np.int64) * (1 << 32) + hi[keep])
    lo, hi = code >> 32, code & ((1 << 32) - 1)
    rows = np.array(sorted(content), np.int64)
    pos = np.full(int(max(hi.max(initial=-1), rows.max(initial=-1))) + 1, -1, np.int64)  # row -> content index
    pos[rows] = np.arange(len(rows))
    cv = np.stack([content[r] for r in rows.tolist()]) if len(rows) else np.zeros((0, 1), np.float32)
    score = np.empty(len(lo), np.float32)
    for b in range(0, len(lo), block):
        a, c = lo[b : b + block], hi[b : b + block]
        ga, gc = vectors(a), vectors(c)
        s = np.einsum("ij,ij->i", ga, gc)
        fa, fc = pos[a], pos[c]
        if (fa >= 0).any():
            m = fa >= 0
            s[m] = np.maximum(s[m], np.einsum("ij,ij->i", cv[fa[m]], gc[m]))
        if (fc >= 0).any():
            m = fc >= 0
            s[m] = np.maximum(s[m], np.einsum("ij,ij->i", ga[m], cv[fc[m]]))
        both = (fa >= 0) & (fc >= 0)
        if both.any():
            s[both] = np.einsum("ij,ij->i", cv[fa[both]], cv[fc[both]])
        score[b : b + block] = s
    return lo, hi, score
