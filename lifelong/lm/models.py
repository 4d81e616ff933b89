"""Causal language models for continual pre-training: tiny presets built from a transformers config
(trainable on a CPU), or a model saved in a local directory. Nothing is ever downloaded."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from lifelong.errors import LifelongError
from lifelong.registry import Registry

# preset name -> builder(vocab_size, max_seq_len) -> transformers config
MODEL_PRESETS: Registry[Callable[[int, int], object]] = Registry("model preset")


def _llama(hidden: int, layers: int, heads: int):
    def make(vocab_size: int, max_len: int):
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=int(hidden * 8 / 3 + 63) // 64 * 64,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=max_len,
            tie_word_embeddings=True,
            rope_theta=10000.0,
        )

    return make


def _gpt2(hidden: int, layers: int, heads: int):
    def make(vocab_size: int, max_len: int):
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_positions=max_len,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=vocab_size - 1,
            eos_token_id=vocab_size - 1,
        )

    return make


MODEL_PRESETS.add("tiny-llama", _llama(128, 2, 4))  # ~0.5M parameters with a byte vocabulary: the CPU demo
MODEL_PRESETS.add("tiny-gpt2", _gpt2(128, 2, 4))
MODEL_PRESETS.add("small-llama", _llama(384, 6, 6))  # ~11M: for a GPU
MODEL_PRESETS.add("small-gpt2", _gpt2(384, 6, 6))


def max_positions(config) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(config, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def build_model(
    spec: str, vocab_size: int, seq_len: int, max_len: int = 1024, seed: int = 0
) -> torch.nn.Module:
    """A preset name (``tiny-llama``, ``tiny-gpt2``, ...) or a local model directory; checks the vocabulary
    and
    the sequence length against the model, with one clear message each."""
    from transformers import AutoModelForCausalLM

    if spec in MODEL_PRESETS:
        config = MODEL_PRESETS.get(spec)(vocab_size, max_len)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    elif os.sep in spec or Path(spec).exists():
        p = Path(spec)
        if not (p / "config.json").is_file():
            raise LifelongError(f"model directory '{spec}' has no config.json")
        try:
            model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - transformers raises many kinds; show one line
            raise LifelongError(f"cannot load model '{spec}': {str(e).splitlines()[0]}") from None
    else:
        MODEL_PRESETS.get(spec)  # raises "unknown model preset ... Did you mean"
        raise AssertionError("unreachable")
    config = model.config
    model_vocab = model.get_input_embeddings().weight.shape[0]
    if vocab_size > model_vocab:
        raise LifelongError(
            f"tokenizer has {vocab_size} tokens but the model's vocabulary has {model_vocab}: "
            "use the model's tokenizer"
        )
    limit = max_positions(config)
    if limit is not None and seq_len > limit:
        raise LifelongError(f"sequence length {seq_len} exceeds the model's maximum of {limit} positions")
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
