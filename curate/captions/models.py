"""Caption sources backed by models, through transformers: an image captioner (`--caption-model`: BLIP, BLIP-2,
GIT, a VisionEncoderDecoder; whatever `AutoModelForImageTextToText` loads with its processor) and a paraphraser
(`--paraphrase-model`: a text2text model such as T5 or BART, or a causal LM, given a prompt template).

Decoding is beam search (`num_beams = max(4, k)`, the k best returned), not sampling: a model's entries are a
function of the model and its input alone, the same in any batch, shard order, worker count or seed, so they
are cached by (model, image sha256 or caption) in one SQLite file under the cache folder (`fs.cache_dir()`)
and a resumed or repeated run reads them back instead of generating again. An output that is blank, repeats
its input, or holds a word of the offensive-word list (curate/captions/vocab.py) is not an entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from curate.errors import CurateError
from curate.io import fs
from curate.log import quiet_libraries

MAX_NEW_TOKENS = 40
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def _weights_stamp(name: str) -> dict[str, Any]:
    """What identifies a model's files: for a local folder, its config and the names and sizes of its weight
    files; for a hub id, the id (the snapshot the hub cache resolves it to is what loads)."""
    path = Path(name)
    if not path.is_dir():
        return {"hub": name}
    config = path / "config.json"
    files = sorted((p.name, p.stat().st_size) for p in path.iterdir()
                   if p.suffix in (".safetensors", ".bin", ".json", ".txt", ".model"))
    return {"path": str(path.resolve()), "config": config.read_text(encoding="utf-8") if config.is_file() else None,
            "files": files}


def model_key(kind: str, name: str, **params: Any) -> str:  # noqa: ANN401
    """The cache's name for (this model's files, how it generates)."""
    blob = json.dumps({"kind": kind, "model": _weights_stamp(name), **params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """Generated entries by (model key, input digest), in SQLite (WAL: several worker processes may write)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or fs.cache_dir() / "model_captions.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=120)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS entries (model TEXT, input TEXT, outputs TEXT, "
                         "PRIMARY KEY (model, input))")
        self._db.commit()

    def get(self, model: str, digests: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for i in range(0, len(digests), 500):
            part = list(digests[i:i + 500])
            marks = ",".join("?" * len(part))
            for digest, outputs in self._db.execute(
                    f"SELECT input, outputs FROM entries WHERE model = ? AND input IN ({marks})", [model, *part]):
                found[digest] = json.loads(outputs)
        return found

    def put(self, model: str, outputs: dict[str, list[str]]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)",
                             [(model, d, json.dumps(o)) for d, o in outputs.items()])
        self._db.commit()

    def close(self) -> None:
        self._db.close()


def generate_cached(model: str, items: Sequence[tuple[str, Any]], generate: Callable[[list[Any]], list[list[str]]],
                    batch_size: int, cache: Cache) -> tuple[list[list[str]], int]:
    """Each item's (digest, input) outputs: from the cache, else made by `generate` in batches of distinct
    inputs (duplicates of one image are generated once) and stored. Returns (outputs per item, how many were
    generated)."""
    digests = [d for d, _ in items]
    have = cache.get(model, sorted(set(digests)))
    todo: dict[str, Any] = {}
    for digest, value in items:
        if digest not in have and digest not in todo:
            todo[digest] = value
    pending = list(todo.items())
    for i in range(0, len(pending), batch_size):
        part = pending[i:i + batch_size]
        made = dict(zip([d for d, _ in part], generate([v for _, v in part]), strict=True))
        cache.put(model, made)
        have.update(made)
    return [have[d] for d in digests], len(pending)


def clean_outputs(texts: Sequence[str], source: str | None = None) -> list[str]:
    """Generated texts as pool entries: stripped, distinct, without blanks, the input itself, or a word of the
    offensive-word list."""
    from curate.captions.vocab import blocklist

    bad = blocklist()
    out: list[str] = []
    for t in texts:
        t = " ".join(t.split())
        if not t or t == (source or "").strip() or t in out:
            continue
        if any(w.lower() in bad for w in _WORD.findall(t)):
            continue
        out.append(t)
    return out


def _load_error(option: str, name: str, what: str, err: Exception) -> CurateError:
    where = "" if Path(name).is_dir() or os.environ.get("HF_HUB_OFFLINE") != "1" else " (offline: not in the hub cache)"
    return CurateError(f"{option} {name}: cannot load it as {what}{where}: {type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''}".rstrip(": "))


def _device_and_dtype(device: str) -> tuple[str, Any]:  # noqa: ANN401
    import torch

    from curate.models import resolve_device

    dev = resolve_device(device)
    return dev, torch.float16 if dev == "cuda" else torch.float32


class Captioner:
    """An image-to-text model: k captions per image (beam search)."""

    def __init__(self, name: str, k: int, device: str = "cpu") -> None:
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

            quiet_libraries()
            processor = AutoProcessor.from_pretrained(name)
            self.images = getattr(processor, "image_processor", processor)
            self.tokenizer = getattr(processor, "tokenizer", None) or AutoTokenizer.from_pretrained(name)
            self.model = AutoModelForImageTextToText.from_pretrained(name)
        except Exception as err:  # noqa: BLE001 (one line for any way a model folder can be wrong)
            raise _load_error("--caption-model", name, "a transformers image-to-text model", err) from None
        self.device, dtype = _device_and_dtype(device)
        self.model = self.model.to(self.device, dtype).eval()
        self.dtype, self.k = dtype, k
        self.key = model_key("caption", name, k=k, max_new_tokens=MAX_NEW_TOKENS)

    def __call__(self, images: list[Any]) -> list[list[str]]:  # noqa: ANN401 (PIL images)
        import torch

        pixels = self.images(images=images, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            out = self.model.generate(pixel_values=pixels, num_beams=max(4, self.k), num_return_sequences=self.k,
                                      max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [clean_outputs(texts[i * self.k:(i + 1) * self.k]) for i in range(len(images))]


class Paraphraser:
    """A text2text model (encoder-decoder) or causal LM: k paraphrases per caption (beam search) of
    `prompt.format(caption=...)`; a causal LM's continuation only."""

    def __init__(self, name: str, k: int, prompt: str, device: str = "cpu") -> None:
        try:
            from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

            quiet_libraries()
            config = AutoConfig.from_pretrained(name)
            self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
            self.tokenizer = AutoTokenizer.from_pretrained(name, padding_side="right" if self.seq2seq else "left")
            loader = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
            self.model = loader.from_pretrained(name)
        except Exception as err:  # noqa: BLE001
            raise _load_error("--paraphrase-model", name, "a transformers text2text or causal language model",
                              err) from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device, _ = _device_and_dtype(device)
        self.model = self.model.to(self.device).eval()
        self.k, self.prompt = k, prompt
        self.key = model_key("paraphrase", name, k=k, prompt=prompt, max_new_tokens=MAX_NEW_TOKENS)

    def __call__(self, captions: list[str]) -> list[list[str]]:
        import torch

        prompts = [self.prompt.format(caption=c) for c in captions]
        enc = self.tokenizer(prompts, padding=True, return_tensors="pt", return_token_type_ids=False,
                             add_special_tokens=self.seq2seq).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, num_beams=max(4, self.k), num_return_sequences=self.k,
                                      max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        if not self.seq2seq:
            out = out[:, enc["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [clean_outputs(texts[i * self.k:(i + 1) * self.k], c) for i, c in enumerate(captions)]


@functools.cache
def captioner(name: str, k: int, device: str) -> Captioner:
    """Loaded once per process."""
    return Captioner(name, k, device)


@functools.cache
def paraphraser(name: str, k: int, prompt: str, device: str) -> Paraphraser:
    return Paraphraser(name, k, prompt, device)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
