"""Tokenizers (byte, locally trained BPE, tokenizer directory) and Hugging Face dataset corpora."""

import numpy as np
import pytest

from lifelong.errors import LifelongError
from lifelong.lm import corpora as C
from lifelong.lm.models import build_model
from lifelong.lm.tokenizers import ByteTokenizer, load_tokenizer_dir, train_bpe

TEXTS = [f"The quick brown fox {i} jumps over the lazy dog. Der schnelle Fuchs springt." for i in range(300)]


def test_byte_tokenizer_roundtrip():
    t = ByteTokenizer()
    ids = t.encode_batch(["Grüße, world"])[0]
    assert max(ids) < 256 and t.decode(ids) == "Grüße, world" and t.vocab_size == 257


def test_bpe_train_save_load_and_model_vocab(tmp_path):
    tok = train_bpe(TEXTS, 400, tmp_path / "bpe")
    again = load_tokenizer_dir(tmp_path / "bpe")
    assert tok.fingerprint == again.fingerprint and tok.vocab_size <= 400
    ids = again.encode_batch(["The quick brown fox"])[0]
    assert len(ids) < len("The quick brown fox") and again.decode(ids) == "The quick brown fox"
    model = build_model("tiny-gpt2", tok.vocab_size, 32)
    assert model.get_input_embeddings().weight.shape[0] == tok.vocab_size
    with pytest.raises(LifelongError, match="too small"):
        train_bpe(TEXTS, 100, tmp_path / "x")
    with pytest.raises(LifelongError, match="has no tokenizer.json"):
        load_tokenizer_dir(tmp_path)


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": TEXTS + ["", "   "]}).save_to_disk(str(tmp_path / "ds"))
    src = C.resolve_corpus(f"hf:{tmp_path / 'ds'}")
    assert src.name == "ds" and len(src.read()) == 300
    c = C.tokenize_corpus(src, ByteTokenizer(), tmp_path / "cache")
    assert c.train.shape[0] > 0 and c.val.shape[0] > 0
    with pytest.raises(LifelongError, match="no 'content' column"):
        C.hf_corpus(f"hf:{tmp_path / 'ds'}", text_field="content").read()
    assert isinstance(np.asarray(c.val), np.ndarray)


def test_a_hub_dataset_without_a_network_fails_at_once_in_one_line(monkeypatch):
    import socket

    def refused(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org:8443")
    with pytest.raises(LifelongError, match="cannot reach hub.example.org to stream dataset 'someone/corpus'"):
        C.hf_corpus("hf:someone/corpus").read()  # the datasets library retried for about 40 s
