"""Tiny randomly initialised captioning and paraphrase models, built from configs in code and saved as ordinary
transformers folders: no such weights exist offline, and these exercise the real loading and generation path
of `--caption-model` / `--paraphrase-model` (tests, `bench.recaption`). Their outputs are random words.

The tokenizer is a BERT WordPiece tokenizer over wordfreq's 2,000 most frequent English words."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from curate.log import quiet_libraries


def _tokenizer() -> Any:  # noqa: ANN401 (transformers' tokenizer)
    from transformers import BertTokenizerFast

    from curate.captions.vocab import common_words

    words = list(common_words(2_000))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "vocab.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
        return BertTokenizerFast(path)


def save_captioner(path: str, seed: int = 0, image_size: int = 32) -> str:
    """A BLIP image captioner (BlipForConditionalGeneration + BlipProcessor), about 0.2M parameters."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    quiet_libraries()
    tok = _tokenizer()
    torch.manual_seed(seed)
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": image_size, "patch_size": 8},
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 64, "bos_token_id": tok.cls_token_id,
                     "pad_token_id": tok.pad_token_id, "sep_token_id": tok.sep_token_id,
                     "eos_token_id": tok.sep_token_id},
        projection_dim=32)
    BlipForConditionalGeneration(config).save_pretrained(path)
    BlipProcessor(BlipImageProcessor(size={"height": image_size, "width": image_size}), tok).save_pretrained(path)
    return path


def save_paraphraser(path: str, kind: str = "seq2seq", seed: int = 0) -> str:
    """A T5 text2text model (`seq2seq`) or a GPT-2 causal LM (`causal`), about 0.1M parameters."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    quiet_libraries()
    tok = _tokenizer()
    torch.manual_seed(seed)
    if kind == "seq2seq":
        model: Any = T5ForConditionalGeneration(T5Config(
            vocab_size=len(tok), d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8,
            decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id))
    elif kind == "causal":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                                           bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                           pad_token_id=tok.pad_token_id))
    else:
        raise ValueError(f"kind is seq2seq or causal, not {kind!r}")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
