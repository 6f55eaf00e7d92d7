"""Verification of uncertain candidate pairs by local features, the way the matching track of the DISC21
copy-detection challenge beat global descriptors.

A pair is checked when its global similarity is in the band between clearly-not and clearly-copy (raw
similarity >= the floor, its rows not linked by the scores), at most `k` pairs a row (each row's most similar). Both
images are made into grey thumbnails (EDGE px); ORB keypoints are matched (Lowe's ratio test, one match per
keypoint of the second image) and a 6-parameter affine transform is fitted with RANSAC at RANSAC_PX. A
transform is not yet a copy: shared templates, UI chrome and textures give many inliers too (measured on
bench/copydetect.py's development stacked set with SIFT and >= 8 inliers: 1,555 non-copies accepted, 936 of
them two unrelated pictures in one screenshot frame). So:

- where the matches may be: keypoints on a frame that many unrelated images share (found by the template
  scan's pixel tests, curate/dedup/templates.py; white bands laid over a picture, found in each image checked)
  are dropped before matching, and the cells on it are not compared, so two pictures in one frame have nothing
  left to match but their pictures; a framed picture's box is cut out first, so a picture a fifth of a
  screenshot gets the thumbnail's pixels;
- the whole overlap must agree, not only the matched points: the first image is warped onto the second by the
  transform, and on a grid of CELL px cells inside the overlap, each textured cell must correlate (zero-mean
  normalised cross-correlation >= CELL_AGREE, after a light blur so noise, JPEG and pixelisation pass); the
  pair is a copy when >= MIN_AGREE of the textured cells agree and >= MIN_INLIERS inliers carry the transform.
  An overlay (text, an emoji, a caption bar) costs the cells it covers, a different picture costs them all.
- mirrored copies: when the pair fails, the second image's mirrored keypoints are tried.

ORB rather than SIFT: on the development stacked set it verified 310 true pairs against SIFT's 289 (9 false
each) at a fifth of the keypoint time; smooth pictures that give ORB fewer than FEW keypoints are searched again
at a lower FAST threshold.

What it cannot see: images with too little texture for keypoints (smooth gradients) stay with their global
score, and one design in other colours (a wallpaper's colourways) verifies as a copy, being the same picture in
grey.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

EDGE = 320  # long edge of the grey thumbnails keypoints are found in
FEATURES = 500  # ORB keypoints per thumbnail, at most
FEW = 100  # fewer keypoints than this at ORB's default FAST threshold (20): found again at LOW_CONTRAST
LOW_CONTRAST = 5
TOO_SMALL = 64  # px: ORB keeps keypoints 31 px off every edge, so a thumbnail's side under this has none
RATIO = 0.8  # Lowe's ratio test
RANSAC_PX = 4.0  # reprojection error of an inlier, thumbnail pixels
MIN_INLIERS = 10
CELL = 16  # px, the grid the overlap is compared on
TEXTURE = 3.0  # grey-level standard deviation from which a cell is textured
CELL_AGREE = 0.5  # zero-mean normalised cross-correlation from which a cell agrees
MIN_AGREE = 0.6  # share of the textured overlap cells that must agree
BLUR = 1.5  # Gaussian sigma, px, applied before cells are compared

T = TypeVar("T")


@dataclass
class Keypoints:
    pts: np.ndarray  # (m, 2) float32, x y in thumbnail pixels
    desc: np.ndarray  # (m, 32) uint8: ORB's binary descriptors

    index: Any = dataclasses.field(init=False, repr=False, compare=False)  # noqa: ANN401

    def __post_init__(self) -> None:
        """The descriptors in a FAISS binary index (exact Hamming search), built once per image rather than per
        pair checked; searches from several threads at once are safe."""
        import faiss

        self.index = faiss.IndexBinaryFlat(8 * self.desc.shape[1])
        self.index.add(self.desc)


@dataclass
class Local:
    """One image's local features: its grey thumbnail, keypoints as it is and mirrored, and where its picture
    is (False on a shared frame; None: everywhere)."""

    grey: np.ndarray
    plain: Keypoints
    mirrored: Keypoints
    picture: np.ndarray | None = None


def thumbnail(img: Image.Image) -> np.ndarray:
    w, h = img.size
    scale = min(1.0, EDGE / max(w, h))
    grey = img if img.mode == "L" else img.convert("L")
    if scale < 1:
        grey = grey.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.BOX)
    return np.asarray(grey)


def no_keypoints() -> Keypoints:
    return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))


def _keypoints(grey: np.ndarray, picture: np.ndarray | None) -> Keypoints:
    import cv2

    if min(grey.shape) < TOO_SMALL:  # ORB finds nothing there, and raises on an image one pixel wide
        return no_keypoints()
    kps, desc = cv2.ORB_create(nfeatures=FEATURES).detectAndCompute(grey, None)
    if len(kps) < FEW:  # smooth pictures (gradients, skies): corners of less contrast
        kps, desc = cv2.ORB_create(nfeatures=FEATURES, fastThreshold=LOW_CONTRAST).detectAndCompute(grey, None)
    pts = cv2.KeyPoint_convert(kps).reshape(-1, 2) if kps else np.zeros((0, 2), np.float32)
    desc = desc if desc is not None else np.zeros((0, 32), np.uint8)
    if picture is not None and len(pts):  # keypoints on the frame are dropped
        x = pts[:, 0].astype(int).clip(0, grey.shape[1] - 1)
        y = pts[:, 1].astype(int).clip(0, grey.shape[0] - 1)
        keep = picture[y, x]
        pts, desc = pts[keep], desc[keep]
    return Keypoints(pts, desc)


def draft_edge(frame: tuple[np.ndarray, tuple] | None) -> int:
    """The edge to decode an image at (JPEG's draft scale keeps both sides >= it) so that its picture, cut out of
    a frame (`local_features`), still has EDGE px on its long side: EDGE, more for a picture smaller than the
    image. Decoding no larger than that: bench/copydetect.py's --timing, 3.2 s of verification's 32 s."""
    if frame is None:
        return EDGE
    x0, y0, x1, y1 = frame[1]
    return int(np.ceil(EDGE / max(x1 - x0, y1 - y0, 1e-3)))


def bands_of(grey: np.ndarray) -> tuple[np.ndarray, tuple] | None:
    """White bands laid over the picture in a thumbnail (`templates.band_frame`, blurred as the scan's thumbnails
    are), as a frame, or None."""
    import cv2

    from curate.dedup.templates import band_frame

    return band_frame(cv2.GaussianBlur(grey, (3, 3), 0))


def local_features(img: Image.Image, frame: tuple[np.ndarray, tuple] | None = None, mirror: bool = True) -> Local:
    """`frame`: the template scan's (frame mask at any scale, True on the shared frame; picture box as shares of
    the width and height). The picture's box is cut out first, so a picture a fifth of a screenshot gets the
    thumbnail's pixels; keypoints on the frame inside the box are dropped and its cells are not compared.
    Without one, white bands laid over the picture (stripes, a caption bar; `templates.overlay_bands`, found in
    the image alone) are its frame: the scan looks only at rows with neighbours enough to find a shared frame.
    `mirror`: also the mirrored keypoints (`same_picture` tries them on its second image only)."""
    import cv2

    from curate.dedup.templates import pixels

    if frame is None:
        grey = thumbnail(img)
        frame = bands_of(grey)
        if frame is None:
            return features_of(grey, None, mirror)
    mask, box = frame
    rows, cols = pixels(box, img.height, img.width)
    img = img.crop((cols.start, rows.start, cols.stop, rows.stop))
    mask = np.ascontiguousarray(mask[pixels(box, *mask.shape)])
    grey = thumbnail(img)
    small = cv2.resize(mask.astype(np.uint8), (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_NEAREST)
    return features_of(grey, small == 0, mirror)


def features_of(grey: np.ndarray, picture: np.ndarray | None = None, mirror: bool = True) -> Local:
    """A thumbnail's local features (`picture`: False on a frame, whose keypoints are dropped; `mirror`: the
    mirrored keypoints too, else none)."""
    if not mirror:
        return Local(grey, _keypoints(grey, picture), no_keypoints(), picture)
    mirrored = np.ascontiguousarray(grey[:, ::-1])
    return Local(grey, _keypoints(grey, picture),
                 _keypoints(mirrored, None if picture is None else np.ascontiguousarray(picture[:, ::-1])), picture)


def transform(a: Keypoints, b: Keypoints) -> tuple[np.ndarray, int] | None:
    """The affine transform from a's thumbnail to b's and its inlier count, or None."""
    import cv2

    if len(a.desc) < 2 or len(b.desc) < 2:
        return None
    # each of a's keypoints, its two nearest of b's (Hamming; FAISS's binary search, 3.5x OpenCV's batchDistance
    # on 500 x 500); Lowe's ratio test; then one match per b keypoint
    dist, near = b.index.search(a.desc, 2)
    qa = np.flatnonzero((near[:, 1] >= 0) & (dist[:, 0] < RATIO * dist[:, 1]))
    tb = near[qa, 0]
    order = np.lexsort((dist[qa, 0], tb))
    qa, tb = qa[order], tb[order]
    first = np.ones(len(tb), bool)
    first[1:] = tb[1:] != tb[:-1]
    qa, tb = qa[first], tb[first]
    if len(qa) < MIN_INLIERS:  # too few to carry a transform: no RANSAC
        return None
    matrix, inliers = cv2.estimateAffine2D(a.pts[qa], b.pts[tb], method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX,
                                           maxIters=2000, confidence=0.99, refineIters=10)
    if matrix is None:
        return None
    return matrix, int(inliers.sum())


def agreement(a: np.ndarray, b: np.ndarray, matrix: np.ndarray, a_picture: np.ndarray | None = None,
              b_picture: np.ndarray | None = None) -> float:
    """Share of the textured CELL x CELL cells of b, inside the part a covers once warped by `matrix` and off
    both images' frames (`*_picture`: False on a frame), where the two correlate."""
    import cv2

    h, w = b.shape
    warped = cv2.warpAffine(a.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR)
    valid = np.ones(a.shape, np.float32) if a_picture is None else a_picture.astype(np.float32)
    cover = cv2.warpAffine(valid, matrix, (w, h), flags=cv2.INTER_NEAREST)
    if b_picture is not None:
        cover *= b_picture
    rows, cols = h // CELL, w // CELL
    if rows == 0 or cols == 0:
        return 0.0

    def cells(x: np.ndarray) -> np.ndarray:
        return x[: rows * CELL, : cols * CELL].reshape(rows, CELL, cols, CELL).transpose(0, 2, 1, 3).reshape(
            rows, cols, -1)

    pa = cells(cv2.GaussianBlur(warped, (0, 0), BLUR))
    pb = cells(cv2.GaussianBlur(b.astype(np.float32), (0, 0), BLUR))
    inside = cells(cover).mean(-1) > 0.95
    pa = pa - pa.mean(-1, keepdims=True)
    pb = pb - pb.mean(-1, keepdims=True)
    sa, sb = np.sqrt((pa * pa).mean(-1)), np.sqrt((pb * pb).mean(-1))
    textured = inside & ((sa > TEXTURE) | (sb > TEXTURE))
    corr = (pa * pb).mean(-1) / np.maximum(sa * sb, 1e-6)
    return float((textured & (corr >= CELL_AGREE)).sum() / max(1, int(textured.sum())))


def same_picture(a: Local, b: Local) -> bool:
    """Whether b shows a's picture (as it is, or mirrored) by the tests in the module docstring."""
    width = b.grey.shape[1]
    mirror = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # b's mirrored x -> b's x
    for keypoints, to_b in ((b.plain, np.eye(3)), (b.mirrored, mirror)):
        found = transform(a.plain, keypoints)
        if found is not None and found[1] >= MIN_INLIERS:
            if agreement(a.grey, b.grey, (to_b @ np.vstack([found[0], [0, 0, 1]]))[:2], a.picture,
                         b.picture) >= MIN_AGREE:
                return True
    return False


def union_max(
    n: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (i < j) of all parts once each, sorted, with the highest similarity any part gives them."""
    i = np.concatenate([p[0] for p in parts]).astype(np.int64)
    j = np.concatenate([p[1] for p in parts]).astype(np.int64)
    sim = np.concatenate([p[2] for p in parts]).astype(np.float32)
    code = np.minimum(i, j) * n + np.maximum(i, j)
    order = np.lexsort((-sim, code))
    code, sim = code[order], sim[order]
    first = np.ones(len(code), bool)
    first[1:] = code[1:] != code[:-1]
    return code[first] // n, code[first] % n, sim[first]


def band(i: np.ndarray, j: np.ndarray, raw: np.ndarray, linked: np.ndarray, floor: float, k: int) -> np.ndarray:
    """Positions of the pairs to check: not `linked` already (their rows in one cluster), raw similarity >=
    floor, and among the k most similar such pairs of either of their rows."""
    cand = np.flatnonzero(~linked & (raw >= floor))
    if len(cand) == 0:
        return cand
    ends = np.concatenate([i[cand], j[cand]])
    pos = np.concatenate([cand, cand])
    order = np.lexsort((pos, -np.concatenate([raw[cand], raw[cand]]), ends))
    ends, pos = ends[order], pos[order]
    rank = np.arange(len(ends)) - np.searchsorted(ends, ends, side="left")  # place among its row's pairs
    return np.unique(pos[rank < k])


def batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


Decoder = Callable[[int], Image.Image | None]


def verify(i: np.ndarray, j: np.ndarray, load: Callable[[set[int]], Iterator[tuple[int, Decoder]]],
           frames: dict[int, tuple[np.ndarray, tuple]], labels: np.ndarray, workers: int = 1,
           progress: Callable[[str, int], Callable[[int], None]] | None = None, chunk: int = 64,
           thumbs: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, int]:
    """Which pairs (i[p], j[p]) are the same picture, and how many were checked: in the order given, `chunk`
    pairs at a time; a pair whose rows are in one cluster already (`labels`, joined by the pairs verified so
    far) is skipped (False): in a group of many copies a few checks join them all. `load(rows)` yields (row, decode):
    `decode(edge)` gives the image at least `edge` px a side where the format can decode smaller (`draft_edge`),
    or None when it no longer decodes (its pairs verify nothing), and runs in the worker threads, as
    do the keypoints, matching and RANSAC (Pillow's decoders and OpenCV release the GIL). `frames`: row ->
    (frame mask, picture box) from the template scan. `thumbs`: row -> its `thumbnail` of the image decoded at
    EDGE, made already (the template scan decodes at that scale): an unframed row with one is not decoded again
    unless white bands must be cut out of it. Taken out of the dict as used."""
    rows = set(np.concatenate([i, j]).tolist())
    second = set(j.tolist())  # the rows whose mirrored keypoints are tried
    local: dict[int, Local] = {}
    tick = progress("dedup verify: keypoints", len(rows)) if progress else None
    parent: dict[int, int] = {}

    def root(c: int) -> int:
        while parent.get(c, c) != c:
            c = parent[c]
        return c

    import faiss

    # the threads are the parallelism: each FAISS search in them on one OpenMP thread
    with ThreadPoolExecutor(max(1, workers), initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool:
        def one(item: tuple[int, Decoder]) -> tuple[int, Local | None]:
            r, decode = item
            frame = frames.get(r)
            edge = draft_edge(frame)
            grey = thumbs.pop(r, None) if thumbs is not None and frame is None else None
            if grey is not None:  # the thumbnail local_features would make: its bands are found once, here
                frame = bands_of(grey)
                if frame is None:
                    return r, features_of(grey, None, r in second)
            img = decode(edge)  # at EDGE for a row with bands, as local_features would have cut them from
            return r, None if img is None else local_features(img, frame, r in second)

        for batch in batches(load(rows), 256):  # encoded images in memory: one batch at a time
            for r, feats in pool.map(one, batch):
                if feats is not None:
                    local[r] = feats
                if tick:
                    tick(1)
        tick = progress("dedup verify: pairs", len(i)) if progress else None

        def check(p: int) -> bool:
            a, b = local.get(int(i[p])), local.get(int(j[p]))
            return a is not None and b is not None and same_picture(a, b)

        ok = np.zeros(len(i), bool)
        checked = 0
        for start in range(0, len(i), chunk):
            todo = [p for p in range(start, min(start + chunk, len(i)))
                    if root(int(labels[i[p]])) != root(int(labels[j[p]]))]
            checked += len(todo)
            for p, same in zip(todo, pool.map(check, todo), strict=True):
                if same:
                    ok[p] = True
                    a, b = root(int(labels[i[p]])), root(int(labels[j[p]]))
                    parent[max(a, b)] = min(a, b)
            if tick:
                tick(min(start + chunk, len(i)) - start)
        return ok, checked
