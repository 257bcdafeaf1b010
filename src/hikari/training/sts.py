"""Selective Token Supervision (STS): per-token loss weights for Stage 3 captions.

The HIKARI "Antares" recipe weighted each caption token by w(t) = w_ans(t) · w_reason(t):

- w_ans (answer proximity) is a per-*sentence* weight. The response is split after `.`, `!` or `?` followed by
  whitespace; the first rule that applies decides: recommendation wording → `w_recommend`, diagnosis wording →
  `w_diagnosis`, the first sentence → `w_first`, any other sentence → `w_other`.
- w_reason (medical content) is 1.0 for medical tokens and γ otherwise. A token is medical
  - in `"span"` mode (default, what the design intends) when its character span overlaps a match of the medical
    lexicon in the response text, so every piece of a term the tokenizer splits ("B", "iop", "sy") counts;
  - in `"vocab"` mode (the original's mechanism, to reproduce Antares) when its *own* decoded text matches the
    lexicon, so a term split into several tokens usually gets γ on every piece.

Sentences and lexicon matches are found on characters and mapped to tokens through the fast tokenizer's
`offset_mapping` (the original re-encoded each sentence alone and counted tokens, which drifts at every sentence
boundary), so any fast tokenizer works.

Weights are computed in the data collator, never in the training step: `batch_token_weights` takes the label
tensor the collator built and returns a weight tensor aligned with it position by position. Whoever shifts the
labels for next-token prediction shifts the weights the same way (`shifted_token_weights`).

Template tokens. The project's labels are the assistant completion *including* the chat-template framing
(`"\\n</think>\\n\\n"` before the caption, `"<|im_end|>"` after it). Those tokens are not caption text, so they get
the fixed weight `w_template` (default 1.0), outside sentence classes and normalisation. Why 1.0: they are what
makes a generation parse and stop. Under STS most caption tokens weigh 0.06-0.1 before normalisation; had the
stop token been weighted like a non-medical word (as in the original, which gave trailing tokens the last
sentence's weight times γ), the model would be taught the end of the answer ten times more weakly than a
disease name — a direct route to captions that do not stop. With `normalize="mean"` the caption weights have
mean 1 and the template tokens weigh 1, so every sequence's weights still average 1 over all supervised tokens
and the loss stays on plain cross-entropy's scale.

Normalisation (`STSConfig.normalize`):
- `"mean"` (the original): each sequence's caption-token weights are divided by their mean (mean 1 per
  sequence); the trainer divides the summed weighted loss by the number of supervised tokens, as for plain CE.
- `"none"`: raw weights; the trainer divides by the number of supervised tokens.
- `"global"`: raw weights as well, but the trainer divides the summed weighted loss by Σw over the whole
  optimizer step — every micro-batch of the accumulation and every process (all-reduced) — so the loss is a
  true weighted mean and a caption's weight does not depend on the others in its batch.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hikari.config import STSConfig
from hikari.data.labels import ALIASES, DISEASES
from hikari.data.skincap import SKINCON_CONCEPTS
from hikari.models.batching import IGNORE_INDEX

# ---------------------------------------------------------------------------------------------------------------
# The medical lexicon (w_reason). Stems below are word-start prefixes: `desquamat` matches "desquamation",
# "desquamative"; plain words take any suffix too ("papule" -> "papules", "erythema" -> "erythematous").
# "biops" and "atroph" are the reference's "biopsy" and "atrophy" cut to the stem their inflections share
# (biopsies, atrophic); "histopatholog" is the "patholog…" family's most common prefixed form, which a word-start
# match would otherwise miss (the original's substring search found it).
# ---------------------------------------------------------------------------------------------------------------
MORPHOLOGY_STEMS: tuple[str, ...] = (
    "papule", "plaque", "macule", "nodule", "vesicle", "pustule", "bulla", "cyst", "wheal",
    "erythema", "erythematous", "scale", "scaly", "scaling", "crust", "desquamat",
    "ulcer", "erosion", "fissure", "excoriation", "hyperpigment", "hypopigment", "depigment",
    "lichenif", "keratosis", "hyperkeratosis", "atroph", "fibrosis", "induration", "telangiectas",
    "dermoscop", "dermatoscop", "melanin", "melanocyte", "melanoma", "keratinocyte", "epiderm", "derm",
    "sebaceous", "follicular", "perifollicular", "nevus", "nevi", "carcinoma", "malignant", "benign",
    "inflammatory", "autoimmune", "pruritus", "pruritic",
)  # fmt: skip
DIAGNOSTIC_STEMS: tuple[str, ...] = (
    "diagnos", "indicat", "consistent with", "suggest", "possibility", "possible", "consider", "biops",
    "patholog", "histopatholog", "examina", "recommend", "differential",
)  # fmt: skip
# "asymmetr": the same concept as "symmetr"; the original's substring search matched it through "symmetr".
LOCATION_STEMS: tuple[str, ...] = (
    "extensor", "flexor", "dorsal", "palmar", "plantar", "symmetr", "asymmetr", "disseminat", "generalized",
    "localized", "bilateral", "unilateral",
)  # fmt: skip

# Disease names, aliases and SKINCON concept names are words of ordinary text; those of at most this many
# letters ("mole", "acne", "scar", "blue") are matched as whole words (plus a few endings) because as prefixes
# they over-match ("molecular", "scarce"); longer ones are prefixes ("sarcoid" -> "sarcoidosis").
_WHOLE_WORD_MAX_LEN = 4
_SHORT_WORD_ENDINGS = r"(?:s|es|ed|ing|red|ring|ish)?\b"  # moles, scarred, scarring, grayish


def _concept_terms(names: Sequence[str]) -> list[str]:
    """Lowercase words of SKINCON concept names: "Purpura/Petechiae" -> purpura, petechiae;
    "Brown(Hyperpigmentation)" -> brown, hyperpigmentation."""
    terms: list[str] = []
    for name in names:
        for part in re.split(r"[/()]", name.lower()):
            if part.strip():
                terms.append(part.strip())
    return terms


def _phrase(term: str) -> str:
    """A term as a regex body: words escaped, separated by any run of spaces or hyphens ("flat topped",
    "flat-topped")."""
    words = [re.escape(w) for w in re.split(r"[\s-]+", term.strip()) if w]
    return r"[\s-]+".join(words)


def lexicon_fragments() -> list[str]:
    """Regex alternatives of the lexicon, longest term first: alternation takes the first alternative that
    matches, so "squamous cell carcinoma in situ" must come before "squamous" and "acne vulgaris" before "acne"."""
    fragments: dict[str, int] = {}  # regex -> length of its term
    for stem in (*MORPHOLOGY_STEMS, *DIAGNOSTIC_STEMS, *LOCATION_STEMS):
        fragments[_phrase(stem) + r"\w*"] = len(stem)
    words = [*DISEASES, *(a for aliases in ALIASES.values() for a in aliases), *_concept_terms(SKINCON_CONCEPTS)]
    for word in words:
        short = len(word.replace(" ", "")) <= _WHOLE_WORD_MAX_LEN
        fragments[_phrase(word.lower()) + (_SHORT_WORD_ENDINGS if short else r"\w*")] = len(word)
    return sorted(fragments, key=lambda f: (-fragments[f], f))


def _factored(fragments: Sequence[str]) -> str:
    """One alternation of `fragments`, factored by first letter: "a(?:cne…|ctinic…)|b(?:…)". Alternatives with
    different first letters can never match at the same position, so the order within each letter (longest
    first) decides exactly as in the flat alternation — while re tries ~1/20 of the alternatives per position
    (3–4× faster on captions). Fragments that do not start with a letter stay unfactored."""
    by_letter: dict[str, list[str]] = {}
    other: list[str] = []
    for fragment in fragments:
        head = fragment[0].lower()
        if head.isalpha() and head.isascii():
            by_letter.setdefault(head, []).append(fragment[1:])
        else:
            other.append(fragment)
    parts = [f"{head}(?:{'|'.join(tails)})" for head, tails in by_letter.items()]
    return "|".join([*parts, *other])


MEDICAL_PATTERN: re.Pattern[str] = re.compile(r"\b(?:" + _factored(lexicon_fragments()) + ")", re.IGNORECASE)

# ---------------------------------------------------------------------------------------------------------------
# Sentence classes (w_ans). Stems written "advis…" in the definition are prefixes; plain words match with their
# inflections ("recommended", "confirms") but not as prefixes of other words ("further" never matches
# "furthermore"). (The original wrapped everything in \b…\b, which made "advis", "requir", "patholog",
# "examina" and "dermoscop" dead: they only matched as whole words.) "suggest" is in both lists, as in the
# original; the recommendation rule is checked first, so it decides when the weights differ.
# ---------------------------------------------------------------------------------------------------------------
_INFLECTION = r"(?:s|es|d|ed|ing|ation|ations)?\b"
RECOMMENDATION_PATTERN: re.Pattern[str] = re.compile(
    r"\b(?:(?:recommend|suggest|necessary|biopsy|biopsies|confirm|further)" + _INFLECTION
    + r"|(?:advis|requir|patholog|examina|dermoscop)\w*)",
    re.IGNORECASE,
)  # fmt: skip
DIAGNOSIS_PATTERN: re.Pattern[str] = re.compile(
    r"\b(?:(?:indicat|diagnos|possibilit)\w*"
    r"|consistent\s+with\b"
    r"|(?:suggest|consider)" + _INFLECTION
    + r"|may\s+(?:be|indicate|suggest)\b"
    r"|is\s+an?\s+\w+\s+(?:disease|condition|disorder)s?\b)",
    re.IGNORECASE,
)  # fmt: skip
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the sentences of `text`: split after `.`, `!` or `?` followed by
    whitespace, empty pieces dropped. The whitespace between two sentences belongs to neither."""
    spans: list[tuple[int, int]] = []
    start = 0
    for brk in _SENTENCE_BREAK.finditer(text):
        spans.append((start, brk.start()))
        start = brk.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def sentence_weight(sentence: str, index: int, config: STSConfig) -> float:
    """w_ans of one sentence (`index` = its position among the response's sentences): first rule that applies."""
    if RECOMMENDATION_PATTERN.search(sentence):
        return config.w_recommend
    if DIAGNOSIS_PATTERN.search(sentence):
        return config.w_diagnosis
    return config.w_first if index == 0 else config.w_other


def medical_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of medical-lexicon matches in `text`."""
    return [m.span() for m in MEDICAL_PATTERN.finditer(text)]


# Vocab mode: token id -> "its decoded text matches the lexicon", cached per tokenizer (filled lazily with the ids
# actually seen, so a 151k-entry vocabulary is never decoded in full). Weak keys: no tokenizer is kept alive.
_VOCAB_MEDICAL: weakref.WeakKeyDictionary[Any, dict[int, bool]] = weakref.WeakKeyDictionary()


def vocab_medical_mask(tokenizer: Any, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Boolean (T,): whether each token's own decoded text (special tokens skipped) matches the lexicon."""
    cache = _VOCAB_MEDICAL.setdefault(tokenizer, {})
    ids = np.asarray(ids, dtype=np.int64)
    new = [int(i) for i in np.unique(ids) if int(i) not in cache]
    if new:
        texts = tokenizer.batch_decode([[i] for i in new], skip_special_tokens=True)
        cache.update((i, MEDICAL_PATTERN.search(t) is not None) for i, t in zip(new, texts))
    return np.fromiter((cache[int(i)] for i in ids), dtype=bool, count=len(ids))


def encode_with_offsets(tokenizer: Any, texts: list[str]) -> tuple[list[list[int]], list[np.ndarray]]:
    """Token ids and (T, 2) character offsets of each text, with no special tokens added (a fast tokenizer's
    offsets; TypeError for a slow one). A collator that tokenizes its completions this way hands the result to
    `batch_token_weights(encoded=...)`, so they are tokenized once."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"STS needs a fast tokenizer (character offsets); got {type(tokenizer).__name__}")
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in enc["offset_mapping"]]
    return [list(ids) for ids in enc["input_ids"]], offsets


# str.isspace() of every code point up to U+3001; all whitespace lies below U+3001 (the last is U+3000), so any
# higher code point reads the table's last entry, False.
_SPACE_TABLE = np.array([chr(c).isspace() for c in range(0x3002)], dtype=bool)


def is_space(text: str) -> np.ndarray:
    """Boolean (len(text),): `c.isspace()` per character, vectorised over the UTF-32 code points."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return _SPACE_TABLE[np.minimum(codes, len(_SPACE_TABLE) - 1)]


def _batch_weights(
    texts: Sequence[str],
    spans: Sequence[tuple[int, int]],
    ids: Sequence[Sequence[int]],
    offsets: Sequence[np.ndarray],
    tokenizer: Any,
    config: STSConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised weights and the response mask, both flat over the tokens of every row (row 0's tokens first),
    for texts whose response (caption) is `texts[r][spans[r][0]:spans[r][1]]`; `ids[r]` / `offsets[r]` (T_r, 2)
    are row r's tokens. Tokens outside the response get `w_template`.

    Vectorised over the whole batch: the texts are joined (NUL-separated) into one character axis; sentence
    classes and lexicon matches (a regex pass per caption) are painted onto per-character arrays, and every token
    reads those through its offsets in one set of array operations."""
    n_rows = len(texts)
    counts = np.fromiter((len(t) for t in ids), dtype=np.int64, count=n_rows)
    starts = np.zeros(n_rows, dtype=np.int64)  # each text's first character on the joined axis
    np.cumsum([len(t) + 1 for t in texts[:-1]], out=starts[1:])
    joined = "\0".join(texts)  # NUL: neither space nor word character, so it ends whitespace runs and words
    n_chars = len(joined)
    ans = np.full(n_chars, config.w_template, dtype=np.float64)
    marks = np.zeros(n_chars + 1, dtype=np.int64)
    for r, (text, (rs, re_)) in enumerate(zip(texts, spans, strict=True)):
        response, o = text[rs:re_], int(starts[r]) + rs
        # w_ans per character; whitespace between sentences keeps the preceding sentence's weight, leading
        # whitespace the first sentence's.
        sentences = sentence_spans(response)
        for k, (s, e) in enumerate(sentences):
            begin = 0 if k == 0 else s
            end = sentences[k + 1][0] if k + 1 < len(sentences) else len(response)
            ans[o + begin : o + end] = sentence_weight(response[s:e], k, config)
        if config.reason_mode == "span":
            for s, e in medical_spans(response):
                marks[o + s] += 1
                marks[o + e] -= 1

    row = np.repeat(np.arange(n_rows), counts)
    flat = np.concatenate([np.asarray(x, dtype=np.int64).reshape(-1, 2) for x in offsets]) if n_rows else np.zeros(
        (0, 2), dtype=np.int64)  # fmt: skip
    span = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    rs, re_ = span[row, 0], span[row, 1]
    text_len = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n_rows)[row]
    o = starts[row]
    a, b = flat[:, 0], flat[:, 1]
    in_resp = (b > a) & (a < re_) & (b > rs)
    # A token takes the weight of its first non-whitespace character (" papule" -> the "p"), so a token that
    # carries the whitespace before a sentence belongs to that sentence.
    solid = np.append(~is_space(joined), True)
    position = np.arange(n_chars + 1)
    next_solid = np.minimum.accumulate(np.where(solid, position, n_chars)[::-1])[::-1]
    lo = o + np.minimum(np.maximum(a, rs), np.maximum(text_len - 1, 0))
    hi = o + np.minimum(b, re_)
    rep = np.where(next_solid[lo] < hi, next_solid[lo], lo)
    w_ans = ans[np.minimum(rep, max(n_chars - 1, 0))] if n_chars else np.full(len(row), config.w_template)

    if config.reason_mode == "span":
        covered = np.concatenate([[0], np.cumsum(np.cumsum(marks)[:n_chars] > 0)])  # prefix count of medical chars
        hi_c = o + np.minimum(np.minimum(b, re_), text_len).clip(0)
        lo_c = o + np.minimum(np.maximum(a, rs), text_len).clip(0)
        medical = covered[hi_c] - covered[lo_c] > 0
    else:
        all_ids = np.concatenate([np.asarray(t, dtype=np.int64) for t in ids]) if n_rows else np.zeros(0, np.int64)
        medical = vocab_medical_mask(tokenizer, all_ids)
    weights = np.where(in_resp, w_ans * np.where(medical, 1.0, config.gamma), config.w_template)

    if config.normalize == "mean":  # mean 1 over each row's response tokens (rows whose mean is 0 stay as they are)
        sums = np.bincount(row, weights=np.where(in_resp, weights, 0.0), minlength=n_rows)
        n_resp = np.bincount(row, weights=in_resp, minlength=n_rows)
        mean = np.divide(sums, n_resp, out=np.zeros(n_rows), where=n_resp > 0)
        divisor = np.where(mean > 0, mean, 1.0)
        weights = np.where(in_resp, weights / divisor[row], weights)
    return weights, in_resp


def token_weights(text: str, tokenizer: Any, config: STSConfig = STSConfig()) -> tuple[list[int], torch.Tensor]:
    """Token ids of one response and their STS weights (T,) float32, every token counted as response text.

    The ids are `tokenizer(text, add_special_tokens=False)`; with `normalize="mean"` the weights have mean 1.
    """
    ids_list, offsets = encode_with_offsets(tokenizer, [text])
    weights, _ = _batch_weights([text], [(0, len(text))], ids_list, offsets, tokenizer, config)
    return ids_list[0], torch.from_numpy(weights.astype(np.float32))


def batch_token_weights(
    labels: torch.Tensor,
    completions: Sequence[str],
    responses: Sequence[str],
    tokenizer: Any,
    config: STSConfig = STSConfig(),
    *,
    ignore_index: int = IGNORE_INDEX,
    encoded: tuple[Sequence[Sequence[int]], Sequence[np.ndarray]] | None = None,
) -> torch.Tensor:
    """STS weights (B, L) float32 aligned with `labels` (B, L); 0 wherever `labels == ignore_index`.

    Args:
        labels: the collator's label tensor: each row holds the tokens of `completions[b]` (tokenized with
            `add_special_tokens=False`, possibly cut short by truncation) in one contiguous run, `ignore_index`
            elsewhere (prompt, image, padding).
        completions: the supervised text of each example, template framing included
            (e.g. "\\n</think>\\n\\n{caption}<|im_end|>").
        responses: the caption of each example; it must occur in its completion (its last occurrence is used).
            Tokens of the completion outside the caption are template tokens and get `config.w_template`.
        tokenizer: the fast tokenizer that produced the labels.
        encoded: `encode_with_offsets(tokenizer, completions)` when the caller has it already (None: computed).

    With `normalize="mean"` each row's caption tokens that survived truncation have mean weight 1. Raises
    ValueError (naming the example) when a row's supervised tokens are not contiguous or are not the tokenization
    of its completion: the weights would silently land on the wrong tokens.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be (B, L), got shape {tuple(labels.shape)}")
    if not (len(completions) == len(responses) == labels.shape[0]):
        raise ValueError(
            f"{labels.shape[0]} label rows, {len(completions)} completions, {len(responses)} responses: must match"
        )
    ids_list, offsets = encoded if encoded is not None else encode_with_offsets(tokenizer, list(completions))
    if len(ids_list) != len(completions) or len(offsets) != len(completions):
        raise ValueError(f"encoded holds {len(ids_list)} rows for {len(completions)} completions")
    labels_np = labels.detach().cpu().numpy()
    supervised = labels_np != ignore_index
    n_sup = supervised.sum(1)
    first = supervised.argmax(1)
    rows, texts, spans, kept_ids, kept_offsets, flat_positions = [], [], [], [], [], []
    for row, (completion, response, ids, offs) in enumerate(zip(completions, responses, ids_list, offsets)):
        n = int(n_sup[row])
        if n == 0:
            continue
        start_pos = int(first[row])
        if not supervised[row, start_pos : start_pos + n].all():
            raise ValueError(f"example {row}: supervised label positions are not one contiguous run")
        if n > len(ids) or not np.array_equal(labels_np[row, start_pos : start_pos + n], np.asarray(ids[:n])):
            raise ValueError(
                f"example {row}: its {n} supervised labels are not the first tokens of its completion "
                f"({len(ids)} tokens) under this tokenizer; pass the exact completion text the labels came from"
            )
        start = completion.rfind(response)
        if start < 0 and response.strip():
            response = response.strip()
            start = completion.rfind(response)
        if start < 0:
            raise ValueError(f"example {row}: the response text does not occur in its completion")
        rows.append(row)
        texts.append(completion)
        spans.append((start, start + len(response)))
        kept_ids.append(ids[:n])  # after truncation: the mean is over the kept tokens
        kept_offsets.append(np.asarray(offs[:n], dtype=np.int64).reshape(-1, 2))
        flat_positions.append(row * labels_np.shape[1] + start_pos)
    out = torch.zeros(labels.shape, dtype=torch.float32)
    if rows:
        weights, _ = _batch_weights(texts, spans, kept_ids, kept_offsets, tokenizer, config)
        counts = np.array([len(t) for t in kept_ids], dtype=np.int64)
        run_start = np.repeat(np.asarray(flat_positions, dtype=np.int64), counts)
        within = np.arange(len(weights)) - np.repeat(np.cumsum(counts) - counts, counts)
        out.view(-1)[torch.from_numpy(run_start + within)] = torch.from_numpy(weights.astype(np.float32))
    return out


def shifted_token_weights(
    weights: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Flat weights (N,) of the next-token targets `labels[:, 1:][labels[:, 1:] != ignore_index]`, in the same
    order: the weights to pass with those targets to the weighted cross-entropy."""
    if weights.shape != labels.shape:
        raise ValueError(f"weights {tuple(weights.shape)} and labels {tuple(labels.shape)} must have one shape")
    shifted = labels[:, 1:]
    return weights[:, 1:][shifted != ignore_index]
