"""`curate train`'s saved pipeline loads through diffusers' public API in a fresh process, with the installed
diffusers + transformers 5 and with diffusers 0.35 + transformers 4.57 (scripts/install.sh puts that pair in
.venv/compat/transformers4), and both give the same token ids and text embeddings as the model that was saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from curate.diffusion import tiny
from curate.stages.train import save_pipeline

COMPAT = Path(__file__).resolve().parents[1] / ".venv" / "compat" / "transformers4"
PROMPT = "a photo of a red bicycle leaning on a wall"
LOAD = """
import json, sys, torch, diffusers, transformers
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1])
ids = pipe.tokenizer(sys.argv[2], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids
with torch.no_grad():
    hidden = pipe.text_encoder(ids)[0]
print(json.dumps({"versions": [diffusers.__version__, transformers.__version__], "ids": ids[0].tolist(),
                  "hidden": hidden[0, :8, :4].flatten().tolist()}))
"""


def _load_in_fresh_process(path: Path, extra_path: Path | None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", LOAD, str(path), PROMPT], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_saved_pipeline_loads_with_transformers_4_and_5(tmp_path):
    assert COMPAT.is_dir(), f"{COMPAT} is missing: run `make install`"
    components = tiny.build(resolution=32, seed=3)
    path = tmp_path / "final"
    save_pipeline(components, str(path))
    assert {"vocab.json", "merges.txt", "tokenizer.json"} <= {p.name for p in (path / "tokenizer").iterdir()}
    tok = components["tokenizer"]
    ids = tok(PROMPT, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = components["text_encoder"](ids)[0][0, :8, :4].flatten()

    current = _load_in_fresh_process(path, None)
    old = _load_in_fresh_process(path, COMPAT)
    assert current["versions"][1].startswith("5.") and old["versions"] == ["0.35.2", "4.57.3"]
    for got in (current, old):
        assert got["ids"] == ids[0].tolist()
        # the text encoder's trained weights are the ones loaded, not a fresh initialisation
        assert torch.allclose(torch.tensor(got["hidden"]), hidden, atol=1e-5)
