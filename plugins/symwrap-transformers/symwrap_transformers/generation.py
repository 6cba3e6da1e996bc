"""Symmetrized text generation: decode the orbit of the prompt together and choose each token from the
group-combined next-token distribution (the fair generation of Basu et al., Equi-Tuning, arXiv 2210.06475).

For a causal LM wrapped with a word-swap group (``symwrap.wrap(lm, "gender_swap", output=VocabularySwapAction(tok))``),
:func:`symmetrized_generate` keeps one copy of every sequence per group element ``g``, all ``|G|·B`` copies in one
batch with one KV cache, one forward per step. At each step:

1. every copy's next-token logits ``ℓ_g`` are mapped to the reduce space (``wrapped``'s ``reduce``: ``"logits"``,
   the default, ``"log_probs"`` or ``"probs"``) and pulled back by ``g⁻¹``: ``(g⁻¹·ℓ_g)[v] = ℓ_g[π_g(v)]``, with
   ``π_g`` the vocabulary permutation of :class:`~symwrap_transformers.VocabularySwapAction` (equivariant output);
   with ``output="invariant"`` nothing is permuted;
2. the pulled-back copies are averaged over the group (``"probs"``: the log of the mean probability);
3. one token ``t`` is chosen from the average (greedy argmax, or sampled after temperature / top-k / top-p);
4. copy ``g`` receives ``π_g(t)`` (equivariant) or ``t`` (invariant), so every copy stays the image of the same
   sequence.

Averaging raw logits and averaging log-probabilities give the same distribution (they differ by one constant per
row), so ``"logits"`` and ``"log_probs"`` choose the same tokens; ``"probs"`` averages probabilities (a mixture).

Convention (how ``g`` acts on a token sequence):
    The *prompt* is moved as text: ``g·ids = encode(g·decode(ids))``, whole words swapped whatever their token
    count ("chairman" -> "chair", "##woman"), so the copies' prompts can differ in length; they are left-padded to a
    common length and masked. Each *generated* token is moved by the vocabulary permutation: ``g·t = π_g(t)``, which
    swaps the single-token spellings of the group's words and fixes every other token, the pieces of multi-token
    words included (a generated "chairman" stays "chairman" in every copy: one token cannot become two without
    breaking the token-by-token choice). With this action, greedy decoding with ``VocabularySwapAction`` is exactly
    equivariant, ``generate(g·prompt) == g·generate(prompt)`` token for token, and with ``output="invariant"`` the
    continuation of ``g·prompt`` equals that of ``prompt``.

    Equivariance holds for prompts that ``g`` moves. A prompt no element moves (none of the group's words in it)
    gives a combined distribution in which each swapped pair ties exactly; greedy decoding then picks the lower token
    id, as ``torch.argmax`` does, so the output cannot be both deterministic and swapped. Sampling is equivariant in
    distribution, not draw by draw for a given ``generator``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from symwrap.errors import ConfigError, IncompatibleModelError, InputLayoutError
from symwrap_transformers.causal_lm import NextTokenModel, VocabularySwapAction
from symwrap_transformers.word_swap import WordSwapAction, WordSwapGroup

__all__ = ["move_prompt", "symmetrized_generate"]

_SPACES = ("logits", "log_probs", "probs")
_RAW = "wrapped.base_model.generate(...)"
#: Keyword arguments of Hugging Face ``generate`` accepted when they have the value that changes nothing.
_NEUTRAL = {
    "num_beams": 1,
    "num_return_sequences": 1,
    "num_beam_groups": 1,
    "repetition_penalty": 1.0,
    "output_scores": False,
    "output_logits": False,
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict_in_generate": False,
    "streamer": None,
    "generation_config": None,
}


@dataclass
class _Setup:
    """What generation needs from the wrapper: the causal LM, its tokenizer, the group and how outputs move."""

    lm: nn.Module
    tokenizer: Any
    group: WordSwapGroup
    table: Tensor | None  # (K, V) int64: row k is π_k (equivariant output), None for invariant averaging
    space: str
    cache_argument: str  # the name under which the LM's forward takes its KV cache
    forward_options: dict[str, int]  # logits_to_keep=1 where the forward takes it


def move_prompt(group: WordSwapGroup, tokenizer: Any, ids: Sequence[int], k: int) -> list[int]:
    """Element ``k`` applied to a prompt's token ids: ``encode(g·decode(ids))`` (``ids`` itself for ``k = 0``).

    Args:
        group: The word-swap group.
        tokenizer: The tokenizer the ids come from.
        ids: One prompt's token ids, without padding.
        k: The element (``0..|G|-1``).

    Raises:
        InputLayoutError: ``ids`` is not the tokenizer's own encoding of its text (decoding and encoding again gives
            other ids), so swapping words in its text is not an action on these ids.
    """
    ids = [int(i) for i in ids]
    text = tokenizer.decode(ids)
    if tokenizer.encode(text, add_special_tokens=False) != ids:
        raise InputLayoutError(
            f"invalid 'input_ids': the prompt {text!r} does not encode back to its ids ({ids[:12]}...), so the word "
            "swaps, which act on the text, are not an action on these ids; pass ids from "
            "tokenizer(text, add_special_tokens=False) or tokenizer.encode(text, add_special_tokens=False)"
        )
    if k % group.period == 0:
        return ids
    return tokenizer.encode(group.apply_to_text(text, k), add_special_tokens=False)


@torch.no_grad()
def symmetrized_generate(
    wrapped: nn.Module,
    input_ids: Tensor | None = None,
    attention_mask: Tensor | None = None,
    *,
    max_new_tokens: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
    tokenizer: Any = None,
    use_cache: bool | None = True,
    **unsupported: Any,
) -> Tensor:
    """Generate from the group-combined next-token distribution (see the module docstring for the convention).

    Args:
        wrapped: A ``SymmetrizedModel`` around a causal LM (``GPT2LMHeadModel``, any ``AutoModelForCausalLM``, or a
            :class:`~symwrap_transformers.NextTokenModel`) with a word-swap group and method ``group_averaging``;
            ``output=VocabularySwapAction(tokenizer)`` for equivariant generation, ``"invariant"`` for invariant.
        input_ids: Prompts ``(B, T)``, left-padded when their lengths differ.
        attention_mask: ``(B, T)``, 1 for prompt tokens and 0 for left padding (``None``: all ones).
        max_new_tokens: Tokens to generate at most (``None``: the LM's ``generation_config.max_new_tokens``, or 20).
        do_sample: Sample instead of taking the argmax.
        temperature: Divides the combined scores before sampling (``> 0``; sampling only).
        top_k: Keep the ``k`` most likely tokens before sampling (sampling only).
        top_p: Keep the smallest set of most likely tokens with probability ``>= top_p`` (sampling only).
        eos_token_id: A token id (or ids) that ends a sequence (``None``: the LM's ``generation_config``); a
            finished sequence is filled with ``pad_token_id``. The ids are compared with the combined choice ``t``.
        pad_token_id: Fills finished sequences (``None``: the LM's ``generation_config``, else the first eos id).
        generator: Random source for sampling.
        tokenizer: The tokenizer of the prompts (``None``: the output action's or the ``NextTokenModel``'s).
        use_cache: Accepted for compatibility; the KV cache is always used (the result does not depend on it).
        **unsupported: ``inputs=`` (HF's name for ``input_ids``) and all-zero ``token_type_ids`` are accepted; other
            ``generate`` options are refused unless they have their neutral value (``num_beams=1``).

    Returns:
        ``(B, T + n)`` int64: the prompts (as given, padding included) followed by ``n <= max_new_tokens`` generated
        tokens; generation stops early when every sequence has ended.

    Raises:
        ConfigError: An unsupported or invalid option (the message names it and the raw route
            ``wrapped.base_model.generate``).
        IncompatibleModelError: ``wrapped`` is not a word-swap wrapper of a causal LM.
        InputLayoutError: ``input_ids``/``attention_mask`` have the wrong type, shape or padding.
    """
    if input_ids is None and "inputs" in unsupported:  # generate's first parameter is called ``inputs`` in HF
        input_ids = unsupported.pop("inputs")
    _refuse_unsupported(unsupported)
    setup = _setup(wrapped, tokenizer)
    ids, mask = _check_prompts(input_ids, attention_mask)
    config = getattr(setup.lm, "generation_config", None)
    max_new_tokens = _max_new_tokens(max_new_tokens, config)
    eos = _eos_ids(eos_token_id, config)
    pad = _pad_id(pad_token_id, config, eos)
    _check_sampling(do_sample, temperature, top_k, top_p)

    device = _device(setup.lm)
    rows, row_mask = _orbit_rows(setup, ids, mask, device)
    period, batch = setup.group.period, ids.shape[0]
    table = None if setup.table is None else setup.table.to(device)
    positions = (row_mask.cumsum(-1) - 1).masked_fill(row_mask == 0, 0)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    eos_tensor = torch.tensor(eos, dtype=torch.long, device=device)
    generated: list[Tensor] = []
    cache = None
    step_ids, step_positions = rows, positions
    for step in range(max_new_tokens):
        out = setup.lm(
            input_ids=step_ids,
            attention_mask=row_mask,
            position_ids=step_positions,
            use_cache=True,
            **({setup.cache_argument: cache} if cache is not None else {}),
            **setup.forward_options,
        )
        cache = out.get(setup.cache_argument, None)
        cache = out.get("past_key_values", None) if cache is None else cache
        if cache is None:  # feeding one token without the cache would decode from that token alone
            raise IncompatibleModelError(
                f"{type(setup.lm).__name__} returned no KV cache with use_cache=True; symmetrized generation needs "
                "one (an AutoModelForCausalLM)"
            )
        logits = out.logits[:, -1, :].reshape(period, batch, -1)  # (K, B, V): row k·B + b is copy k of prompt b
        token = _choose(_combine(logits, table, setup.space), do_sample, temperature, top_k, top_p, generator)
        token = torch.where(finished, torch.full_like(token, pad if pad is not None else 0), token)
        generated.append(token)
        if eos:
            finished = finished | torch.isin(token, eos_tensor)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        # copy k receives π_k(t) (equivariant) or t (invariant); rows are element-major, (K·B, 1)
        step_ids = (table[:, token] if table is not None else token.expand(period, batch)).reshape(-1, 1)
        step_positions = step_positions[:, -1:] + 1
        row_mask = torch.cat([row_mask, row_mask.new_ones(row_mask.shape[0], 1)], dim=1)
    new = torch.stack(generated, dim=1) if generated else ids.new_zeros(batch, 0)
    return torch.cat([input_ids.to(device), new.to(device)], dim=1)  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------- set-up
def _setup(wrapped: nn.Module, tokenizer: Any) -> _Setup:
    base = getattr(wrapped, "base_model", None)
    group = getattr(wrapped, "group", None)
    if base is None or group is None:
        raise IncompatibleModelError(
            f"symmetrized_generate takes a model made by symwrap.wrap, got {type(wrapped).__name__}; wrap the causal "
            "LM first: symwrap.wrap(lm, 'gender_swap', output=VocabularySwapAction(tokenizer))"
        )
    lm = base.model if isinstance(base, NextTokenModel) else base
    if not isinstance(group, WordSwapGroup):
        raise IncompatibleModelError(
            f"symmetrized generation supports word-swap groups ('word_swap', 'gender_swap'), not {group.name!r}; "
            f"generate without symmetry through {_RAW}"
        )
    if not isinstance(wrapped.input_action, WordSwapAction):
        raise IncompatibleModelError(
            f"symmetrized generation swaps words in the prompt text, but the wrapper's input action is "
            f"{type(wrapped.input_action).__name__}; wrap with the group's default action (action=None)"
        )
    method = getattr(getattr(wrapped, "method", None), "name", None)
    if method != "group_averaging":
        raise ConfigError(
            f"symmetrized generation averages over the whole group (method 'group_averaging'), not {method!r}; "
            f"wrap with method='group_averaging' or generate without symmetry through {_RAW}"
        )
    output = wrapped.output_action
    if output is not None and not isinstance(output, VocabularySwapAction):
        raise ConfigError(
            f"symmetrized generation moves next-token logits with VocabularySwapAction or averages them "
            f"(output='invariant'), not with {type(output).__name__}"
        )
    if tokenizer is None:
        tokenizer = getattr(wrapped.output_action, "tokenizer", None) or getattr(base, "tokenizer", None)
    if tokenizer is None:
        raise ConfigError(
            "symmetrized generation needs the tokenizer to swap words in the prompts: pass tokenizer=, or wrap "
            "with output=VocabularySwapAction(tokenizer)"
        )
    options = getattr(wrapped, "symwrap_config", None) or wrapped.config
    space = getattr(options, "reduce", "logits")
    if space not in _SPACES:
        raise ConfigError(
            f"symmetrized generation combines next-token distributions in one of {', '.join(_SPACES)}, not "
            f"reduce={space!r}; wrap with reduce='logits' (the default)"
        )
    forward = getattr(lm, "forward", None)
    if not callable(getattr(lm, "generate", None)) or forward is None:
        raise IncompatibleModelError(
            f"symmetrized generation needs a causal LM with a KV cache (AutoModelForCausalLM), got {type(lm).__name__}"
        )
    parameters = inspect.signature(forward).parameters
    cache_argument = "cache" if "cache" in parameters else "past_key_values"
    table = None
    if output is not None:
        table = output.table(group)
        size = _vocabulary_size(lm)
        if size > table.shape[1]:  # ids past the tokenizer's vocabulary are fixed by every element
            extra = torch.arange(table.shape[1], size).expand(table.shape[0], -1)
            table = torch.cat([table, extra], dim=1)
    # only the last position's logits are needed: skip the LM head on the rest of the prompt, as HF generate does
    forward_options = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    return _Setup(lm, tokenizer, group, table, space, cache_argument, forward_options)


def _vocabulary_size(lm: nn.Module) -> int:
    embeddings = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    return int(weight.shape[0]) if weight is not None else int(lm.config.vocab_size)


def _device(lm: nn.Module) -> torch.device:
    parameter = next(lm.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


# ------------------------------------------------------------------------------------------------- options
def _refuse_unsupported(options: dict[str, Any]) -> None:
    for name, value in options.items():
        if name in _NEUTRAL and value == _NEUTRAL[name]:
            continue
        if name == "token_type_ids" and isinstance(value, Tensor) and not bool(value.any()):
            continue  # all zeros, as a BERT-style tokenizer returns them for one segment: nothing to pass on
        raise ConfigError(
            f"symmetrized generation does not support the option {name}={value!r} (supported: max_new_tokens, "
            "do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id, generator, attention_mask); generate "
            f"without symmetry through {_RAW}"
        )


def _max_new_tokens(value: int | None, config: Any) -> int:
    if value is None:
        value = getattr(config, "max_new_tokens", None) or 20
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"invalid option 'max_new_tokens': expected an int >= 1, got {value!r}")
    return value


def _eos_ids(value: int | Sequence[int] | None, config: Any) -> list[int]:
    if value is None:
        value = getattr(config, "eos_token_id", None)
    if value is None:
        return []
    ids = [value] if isinstance(value, int) else list(value)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ConfigError(f"invalid option 'eos_token_id': expected a token id or a list of ids, got {value!r}")
    return ids


def _pad_id(value: int | None, config: Any, eos: list[int]) -> int | None:
    if value is None:
        value = getattr(config, "pad_token_id", None)
    if value is None:
        return eos[0] if eos else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"invalid option 'pad_token_id': expected a token id (int >= 0), got {value!r}")
    return value


def _check_sampling(do_sample: bool, temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not do_sample:
        if temperature != 1.0 or top_k is not None or top_p is not None:
            raise ConfigError(
                "temperature, top_k and top_p shape sampling, but do_sample=False decodes greedily; pass "
                "do_sample=True to sample, or leave them out"
            )
        return
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ConfigError(f"invalid option 'temperature': expected a number > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"invalid option 'top_k': expected an int >= 1 or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ConfigError(f"invalid option 'top_p': expected a number in (0, 1] or None, got {top_p!r}")


# ------------------------------------------------------------------------------------------------- prompts
def _check_prompts(input_ids: Any, attention_mask: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(input_ids, Tensor) or input_ids.dtype != torch.long or input_ids.ndim != 2:
        got = f"a {tuple(input_ids.shape)} {input_ids.dtype} tensor" if isinstance(input_ids, Tensor) else input_ids
        raise InputLayoutError(
            f"invalid 'input_ids': expected token ids as an int64 tensor (B, T), got {got!r}; use "
            "tokenizer(texts, return_tensors='pt', padding=True) with tokenizer.padding_side = 'left'"
        )
    if input_ids.shape[1] == 0:
        raise InputLayoutError("invalid 'input_ids': the prompts are empty (T = 0); every prompt needs a token")
    if attention_mask is None:
        return input_ids, torch.ones_like(input_ids)
    if not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
        got = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise InputLayoutError(
            f"invalid 'attention_mask': expected a tensor of the shape of input_ids {tuple(input_ids.shape)}, got {got}"
        )
    mask = attention_mask.long()
    if bool(((mask != 0) & (mask != 1)).any()):
        raise InputLayoutError("invalid 'attention_mask': expected 0 (padding) and 1 (token) only")
    if bool((mask.sum(dim=1) == 0).any()):
        raise InputLayoutError("invalid 'attention_mask': a row masks every token; every prompt needs a token")
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise InputLayoutError(
            "invalid 'attention_mask': a prompt has padding after its tokens (right padding); decoder-only "
            "generation continues each prompt after its last token, so pad on the left: tokenizer.padding_side = "
            "'left'"
        )
    return input_ids, mask


def _orbit_rows(setup: _Setup, ids: Tensor, mask: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """The prompts' orbit ``(K·B, L)``, element-major (row ``k·B + b`` is ``g_k·prompt_b``), left-padded, and its
    attention mask."""
    prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    orbit = [move_prompt(setup.group, setup.tokenizer, p, k) for k in range(setup.group.period) for p in prompts]
    length = max(len(p) for p in orbit)
    rows = torch.zeros(len(orbit), length, dtype=torch.long)
    row_mask = torch.zeros_like(rows)
    for r, p in enumerate(orbit):
        rows[r, length - len(p) :] = torch.tensor(p, dtype=torch.long)
        row_mask[r, length - len(p) :] = 1
    return rows.to(device), row_mask.to(device)


# ------------------------------------------------------------------------------------------------- one step
def _combine(logits: Tensor, table: Tensor | None, space: str) -> Tensor:
    """Average ``(K, B, V)`` next-token logits over the group after pulling copy ``k`` back by ``g_k⁻¹``; ``(B, V)``
    scores in the reduce space (``"probs"``: the log of the mean probability, so all spaces return log-scale
    scores)."""
    scores = logits.float()
    if space == "log_probs":
        scores = scores.log_softmax(dim=-1)
    elif space == "probs":
        scores = scores.softmax(dim=-1)
    if table is not None:
        # (g_k⁻¹·ℓ)[v] = ℓ[π_k(v)]: the score copy k gives to the swapped version of token v
        scores = scores.gather(-1, table[:, None, :].expand(-1, scores.shape[1], -1))
    combined = scores.mean(dim=0)
    return combined.log() if space == "probs" else combined


def _choose(
    scores: Tensor, do_sample: bool, temperature: float, top_k: int | None, top_p: float | None, generator: Any
) -> Tensor:
    """The next token ``(B,)`` from combined scores ``(B, V)``: argmax, or a draw after temperature/top-k/top-p."""
    if not do_sample:
        return scores.argmax(dim=-1)
    scores = scores / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = scores.sort(dim=-1, descending=True)
        probs = ordered.softmax(dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass (the first one always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        scores = scores.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(-1)
