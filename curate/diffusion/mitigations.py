"""The research's mitigations at training time (MC, RC, RT, CWR, RNA, GN) and at inference time (GNI, RT,
CWR, RNA on the prompt). Caption ones reuse `curate.captions.ops`; each is seeded by (seed, key, step)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from curate.captions import ops

CAPTION_MITIGATIONS = ("rc", "rt", "cwr", "rna")


@dataclass(frozen=True)
class TrainMitigations:
    mc: bool = True  # sample the caption from the pool each time the image is loaded
    p: float = 0.1  # probability of each of rc/rt/cwr/rna/gn per sample (the reference's 0.1)
    rc: bool = False
    rt: bool = False
    cwr: bool = False
    rna: bool = False
    gn: float = 0.0  # lambda of Gaussian noise on the text-encoder output (0 = off)

    @staticmethod
    def parse(names: Sequence[str], p: float = 0.1, gn: float = 0.1, mc: bool = True) -> TrainMitigations:
        names = [n.strip().lower() for n in names if n.strip()]
        bad = [n for n in names if n not in (*CAPTION_MITIGATIONS, "gn")]
        if bad:
            raise ValueError(f"unknown mitigation(s) {bad}; choose from mc, rc, rt, cwr, rna, gn")
        return TrainMitigations(mc=mc, p=p, rc="rc" in names, rt="rt" in names, cwr="cwr" in names,
                                rna="rna" in names, gn=gn if "gn" in names else 0.0)


def train_caption(pool: Sequence[str], key: str, step: int, seed: int, m: TrainMitigations, vocab: Sequence[str],
                  fixed: bool = False) -> tuple[str, list[str]]:
    """The caption the text encoder sees for `key` at `step`, and which mitigations changed it.

    `fixed` (duplication simulation `dup_both`) always uses the pool's first caption, with no mitigation.
    """
    rng = ops.rng_for(seed, key, "train", step)
    if not pool:
        return "", []
    if fixed:
        return pool[0], []
    caption = pool[rng.randrange(len(pool))] if m.mc else pool[0]
    applied = []
    context: dict[str, Any] = {"vocab": vocab, "n": 2, "rc_n": 4}
    for name in CAPTION_MITIGATIONS:
        if getattr(m, name) and rng.random() < m.p:
            caption = ops.apply(name, caption, key, seed, context, variant=step) or caption
            applied.append(name)
    return caption, applied


def gaussian_noise(encoded: Any, lam: float, p: float, generator: Any) -> Any:  # noqa: ANN401 (torch tensors)
    """GN / GNI: encoded + lam * N(0, 1), for each sample with probability p (p=1 at inference)."""
    import torch

    if lam <= 0:
        return encoded
    mask = (torch.rand(encoded.shape[0], generator=generator) < p).to(encoded.dtype).to(encoded.device)
    noise = torch.randn(encoded.shape, generator=generator).to(encoded.dtype).to(encoded.device)
    return encoded + lam * noise * mask[:, None, None]


def prompt_mitigation(prompt: str, name: str, key: str, seed: int, vocab: Sequence[str], n: int = 2) -> str:
    """Inference-time RT / CWR / RNA on a prompt (n insertions; RNA inserts n numbers)."""
    if name == "none":
        return prompt
    if name == "rna":
        for i in range(n):
            prompt = ops.rna(prompt, key, seed, variant=i) or prompt
        return prompt
    if name in ("rt", "cwr"):
        return ops.apply(name, prompt, key, seed, {"vocab": vocab, "n": n}) or prompt
    raise ValueError(f"unknown inference mitigation {name!r}; one of none, rt, cwr, rna, gni")
