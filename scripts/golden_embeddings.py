#!/usr/bin/env python3
"""Reference vectors for the built-in embedder's golden test.

An independent forward pass of all-MiniLM-L6-v2 in numpy (BERT with exact-erf GELU, mean
pooling over the attention mask, L2 normalization, as sentence-transformers computes it),
reading the same model files the daemon loads. It prints the first values of each sentence's
vector as a Rust array for `server/src/embed.rs`'s golden test.

Usage: pip install numpy safetensors tokenizers
       python3 scripts/golden_embeddings.py [MODEL_DIR]
"""
import json
import math
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "Caroline went to the LGBTQ support group on 7 May",
    "When did Melanie paint a sunrise?",
    "See you!",
]
FIRST = 8

model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else Path.home() / ".cache/engram/models/all-MiniLM-L6-v2")
config = json.loads((model_dir / "config.json").read_text())
w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in load_file(model_dir / "model.safetensors").items()}
tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
tokenizer.no_padding()
heads = config["num_attention_heads"]
eps = config["layer_norm_eps"]
erf = np.vectorize(math.erf)


def layer_norm(x, prefix):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[prefix + ".weight"] + w[prefix + ".bias"]


def linear(x, prefix):
    return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]


def embed(text):
    ids = np.array(tokenizer.encode(text).ids)
    n = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids]
    x = x + w["embeddings.position_embeddings.weight"][:n]
    x = x + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, "embeddings.LayerNorm")
    d = x.shape[1] // heads
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q = linear(x, p + ".attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = linear(x, p + ".attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = linear(x, p + ".attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, heads * d)
        x = layer_norm(x + linear(ctx, p + ".attention.output.dense"), p + ".attention.output.LayerNorm")
        h = linear(x, p + ".intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
        x = layer_norm(x + linear(h, p + ".output.dense"), p + ".output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


for s in SENTENCES:
    v = embed(s)
    print(f"    ({json.dumps(s)}, [{', '.join(f'{x:.7f}' for x in v[:FIRST])}]),")
