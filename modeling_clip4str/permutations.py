"""PARSeq's permutation language modelling: which orders a training step decodes in, and their attention masks.

Masks are boolean with True = "may NOT attend" (the decoder turns them into additive masks).
"""

from __future__ import annotations

import math
from itertools import permutations

import torch


def generate_permutations(
    num_chars: int,
    perm_num: int = 6,
    perm_forward: bool = True,
    perm_mirrored: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.LongTensor:
    """Permutations shared by the whole batch, as position indices incl. BOS (0) and EOS (num_chars + 1).

    Row 0 is the left-to-right order, row 1 the reverse order with EOS first (the null context PARSeq needs to learn
    EOS for NAR decoding), then random orders each followed by its flip. Randomness comes from `generator`
    (the global torch RNG when None: then `torch.manual_seed(s)` reproduces the original's perms for >= 5 chars;
    for shorter words the original samples its pool with NumPy, here torch draws from the same pool).
    """
    if num_chars == 1:  # only one order exists
        return torch.arange(3, device=device).unsqueeze(0)
    max_gen_perms = perm_num // 2 if perm_mirrored else perm_num
    perms = [torch.arange(num_chars, device=device)] if perm_forward else []
    max_perms = math.factorial(num_chars)
    if perm_mirrored:
        max_perms //= 2
    num_gen_perms = min(max_gen_perms, max_perms)
    if num_chars < 5:
        # Sample from the full pool so short words never repeat an order. For 4 chars this selector keeps exactly
        # one of each mirrored pair (the original's table).
        if num_chars == 4 and perm_mirrored:
            selector = [0, 3, 4, 6, 9, 10, 12, 16, 17, 18, 19, 21]
        else:
            selector = list(range(max_perms))
        pool = torch.as_tensor(list(permutations(range(num_chars), num_chars)), device=device)[selector]
        if perm_forward:
            pool = pool[1:]  # the forward order is already in
        stacked = torch.stack(perms) if perms else pool.new_zeros((0, num_chars))
        num_sample = num_gen_perms - len(stacked)
        if len(pool) and num_sample > 0:
            pick = torch.randperm(len(pool), generator=generator)[:num_sample].to(pool.device)
            stacked = torch.cat([stacked, pool[pick]])
        perms_t = stacked
    else:
        perms.extend(
            torch.randperm(num_chars, generator=generator).to(device) for _ in range(num_gen_perms - len(perms))
        )
        perms_t = torch.stack(perms)
    if perm_mirrored:
        # Interleave each order with its flip: [p0, flip(p0), p1, flip(p1), ...].
        perms_t = torch.stack([perms_t, perms_t.flip(-1)]).transpose(0, 1).reshape(-1, num_chars)
    bos = perms_t.new_zeros((len(perms_t), 1))
    eos = perms_t.new_full((len(perms_t), 1), num_chars + 1)
    perms_t = torch.cat([bos, perms_t + 1, eos], dim=1)
    if len(perms_t) > 1:
        # The reverse order also moves EOS first: characters in reverse context, EOS with a null context.
        perms_t[1, 1:] = num_chars + 1 - torch.arange(num_chars + 1, device=perms_t.device)
    return perms_t


def permutation_attention_masks(perm: torch.LongTensor) -> tuple[torch.BoolTensor, torch.BoolTensor]:
    """Content and query masks [T-1, T-1] of one permutation (T = its length, BOS and EOS included).

    A position may attend to the positions that come earlier in the permutation; the query stream also hides
    the position itself (it must predict it). Keys are content positions 0..T-2 (the input without EOS).
    """
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(len(perm), device=perm.device)
    blocked = rank.unsqueeze(0) > rank.unsqueeze(1)  # [query, key]: the key comes later in the order
    content_mask = blocked[:-1, :-1]
    query_mask = (blocked | torch.eye(len(perm), dtype=torch.bool, device=perm.device))[1:, :-1]
    return content_mask, query_mask


def causal_mask(size: int, device: torch.device | str | None = None) -> torch.BoolTensor:
    """Left-to-right mask: position i sees 0..i."""
    return torch.ones(size, size, dtype=torch.bool, device=device).triu(1)


def cloze_mask(size: int, device: torch.device | str | None = None) -> torch.BoolTensor:
    """Refinement mask: query i sees every key except i + 1 (the token it predicts)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).triu(1) & ~torch.ones(
        size, size, dtype=torch.bool, device=device
    ).triu(2)
