"""Causal language models for continual pre-training: tiny presets built from a transformers config
(trainable on a CPU), a model saved in a local directory, or a Hugging Face Hub name (``gpt2``,
``openai-community/gpt2``) for users who have its weights in their cache or a network; offline
(HF_HUB_OFFLINE=1) a name not in the cache is one clear line."""

from __future__ import annotations

import difflib
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
    elif Path(spec).exists() or spec.startswith((".", os.sep)) or (os.sep in spec and spec.count("/") != 1):
        p = Path(spec)
        if not (p / "config.json").is_file():
            raise LifelongError(f"model directory '{spec}' has no config.json")
        try:
            model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - transformers raises many kinds; show one line
            raise LifelongError(f"cannot load model '{spec}': {str(e).splitlines()[0]}") from None
    elif "/" not in spec and difflib.get_close_matches(spec, list(MODEL_PRESETS), n=1, cutoff=0.8):
        MODEL_PRESETS.get(spec)  # a typo of a preset: raises "unknown model preset ... Did you mean"
        raise AssertionError("unreachable")
    else:
        model = from_hub(spec)
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


def hub_reachable() -> bool:
    """Whether the Hub's host name resolves (no network: answered at once, instead of minutes of retries)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def from_hub(name: str) -> torch.nn.Module:
    """A causal LM by its Hugging Face Hub name, from the local cache or the network; one line when it cannot
    be had (offline, unknown name, no causal-LM head)."""
    from transformers import AutoModelForCausalLM

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or not hub_reachable()
    try:
        return AutoModelForCausalLM.from_pretrained(name, local_files_only=offline)
    except Exception as e:  # noqa: BLE001 - hub, network and config errors of many kinds; show one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        where = ("offline (HF_HUB_OFFLINE, or the Hub's host does not resolve) and it is not in the local cache"
                 if offline else
                 "it could not be loaded from the cache or the Hugging Face Hub")
        raise LifelongError(f"model '{name}' is not a preset ({', '.join(MODEL_PRESETS)}) nor a local directory, "
                            f"and {where} ({first}); download it once with a network, or give a local model "
                            "directory") from None


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
