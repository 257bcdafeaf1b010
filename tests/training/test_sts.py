"""Selective Token Supervision weights: sentence classes, the medical lexicon, span vs vocab matching,
normalisation, and alignment with collator-style label tensors — on two different fast tokenizers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from hikari.config import STSConfig
from hikari.data.labels import ALIASES, DISEASES
from hikari.training.sts import (
    MEDICAL_PATTERN,
    batch_token_weights,
    is_space,
    lexicon_fragments,
    medical_spans,
    sentence_spans,
    sentence_weight,
    shifted_token_weights,
    token_weights,
    vocab_medical_mask,
)

IGNORE = -100
# Distinct values, so every weight tells which rule produced it.
CFG = STSConfig(w_recommend=0.9, w_diagnosis=0.7, w_first=0.3, w_other=0.5, gamma=0.1, normalize="none")

CAPTION = (
    "Red papules with telangiectasia on the arm. "
    "These findings are consistent with psoriasis. "
    "Biopsy is recommended. "
    "The lesion is common."
)
# (substring, w_ans of its sentence under CFG, whether the lexicon covers it)
EXPECTED = [
    ("Red", 0.3, False),
    ("papules", 0.3, True),
    ("telangiectasia", 0.3, True),
    ("arm", 0.3, False),
    ("findings", 0.7, False),
    ("consistent with", 0.7, True),
    ("psoriasis", 0.7, True),
    ("Biopsy", 0.9, True),
    ("recommended", 0.9, True),
    ("lesion", 0.5, False),
    ("common", 0.5, False),
]


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    """The tiny HIKARI tokenizer (byte-level BPE, Qwen's pre-tokenizer and control tokens)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def wordpiece_tokenizer() -> Any:
    """A different kind of fast tokenizer: a lowercasing WordPiece trained on a few sentences, whose tiny
    vocabulary splits most medical words into pieces and drops whitespace from its offsets."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "the lesion shows red spots on the arm and the back of the patient.",
        "these findings are common in adults; a further visit is advised.",
        "the quick brown fox jumps over the lazy dog, quizzically vexing a wizard.",
    ] * 3
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.decoder = decoders.WordPiece()
    alphabet = list("abcdefghijklmnopqrstuvwxyz.,;!?")
    wp.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=150, special_tokens=["[UNK]", "[PAD]"],
                                                             initial_alphabet=alphabet))
    return PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture(params=["tiny", "wordpiece"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_tokenizer")


def _weights_over(text: str, tokenizer: Any, weights: torch.Tensor, sub: str) -> list[float]:
    """Weights of the tokens whose character span overlaps the first occurrence of `sub` in `text`."""
    start = text.index(sub)
    end = start + len(sub)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [float(w) for (a, b), w in zip(offsets, weights) if b > a and a < end and b > start]


# --- sentences -----------------------------------------------------------------------------------------------


def test_sentences_split_after_terminal_punctuation_followed_by_whitespace() -> None:
    text = "Plaque of 2.5 cm. Is it red?  Yes!\nSee e.g.the chart"
    assert [text[s:e] for s, e in sentence_spans(text)] == ["Plaque of 2.5 cm.", "Is it red?", "Yes!",
                                                             "See e.g.the chart"]
    assert sentence_spans("   ") == []


@pytest.mark.parametrize(
    ("sentence", "index", "expected"),
    [
        ("A red patch on the arm.", 0, 0.3),  # first sentence
        ("A red patch on the arm.", 2, 0.5),  # any other sentence
        ("Further dermoscopy is advised.", 0, 0.9),  # recommendation beats the first-sentence rule
        ("A biopsy and pathological examination are required.", 3, 0.9),
        ("It is consistent with lichen planus.", 0, 0.7),  # diagnosis beats the first-sentence rule
        ("This may be an early lesion.", 1, 0.7),
        ("Psoriasis is a chronic disease.", 1, 0.7),  # "is a <word> disease"
        ("The diagnosis remains open.", 2, 0.7),
        ("These features suggest psoriasis.", 1, 0.9),  # "suggest" is in both lists: recommendation first
        ("Furthermore, the skin is dry.", 1, 0.5),  # "further" is a word, not a prefix
        ("The patient reconfirmed the history.", 1, 0.5),  # and words match at word starts only
    ],
)
def test_sentence_classes_first_rule_that_applies(sentence: str, index: int, expected: float) -> None:
    assert sentence_weight(sentence, index, CFG) == pytest.approx(expected)


# --- lexicon -------------------------------------------------------------------------------------------------


def test_lexicon_covers_diseases_aliases_families_and_skincon_words() -> None:
    for disease in DISEASES:
        text = f"Findings of {disease.title()}."
        assert [text[s:e] for s, e in medical_spans(text)] == [disease.title()], disease
    for alias in (a for aliases in ALIASES.values() for a in aliases):
        assert MEDICAL_PATTERN.search(f"a {alias} here"), alias
    text = ("Desquamative, flat-topped hyperpigmented macules over the extensor surface; asymmetric "
            "telangiectasias, purpura and a salmon hue. Biopsies are advised.")
    found = {text[s:e].lower() for s, e in medical_spans(text)}
    assert {"desquamative", "flat-topped", "hyperpigmented", "macules", "extensor", "asymmetric",
            "telangiectasias", "purpura", "salmon", "biopsies"} <= found


def _flat_pattern() -> re.Pattern[str]:
    """The lexicon as one flat alternation, longest term first: what MEDICAL_PATTERN factors by first letter."""
    return re.compile(r"\b(?:" + "|".join(lexicon_fragments()) + ")", re.IGNORECASE)


def test_factored_lexicon_pattern_matches_exactly_like_the_flat_alternation(train_records: list) -> None:
    flat = _flat_pattern()
    edge = "Squamous cell carcinoma in situ; squamous; MOLES, molecular, Acne vulgaris."
    texts = [CAPTION, *(r.caption for r in train_records), edge]
    for text in texts:
        assert [m.span() for m in MEDICAL_PATTERN.finditer(text)] == [m.span() for m in flat.finditer(text)], text
    assert sum(len(medical_spans(t)) for t in texts) > len(texts)  # the check compares real matches


def test_factored_lexicon_pattern_on_the_original_captions(reference_dir: Path) -> None:
    from hikari.evaluation.predictions import read_predictions

    flat = _flat_pattern()
    texts = {p.ground_truth for path in sorted(reference_dir.glob("results_caption_*.json"))
             for p in read_predictions(path)}  # fmt: skip
    assert len(texts) > 50  # the original's validation captions (99 distinct)
    for text in texts:
        assert [m.span() for m in MEDICAL_PATTERN.finditer(text)] == [m.span() for m in flat.finditer(text)], text


def test_vectorised_whitespace_test_agrees_with_str_isspace() -> None:
    text = "".join(chr(c) for c in range(0x3100)) + "é 😀\u2028\x1c"  # every whitespace code point and more
    assert is_space(text).tolist() == [c.isspace() for c in text]


def test_lexicon_matches_at_word_starts_and_short_words_whole() -> None:
    text = "A mole and two moles; molecular scarce scarring scary epidermal hyperdermal."
    found = [text[s:e] for s, e in medical_spans(text)]
    # no "molecular", "scarce" or "scary"; "derm" counts at a word start only
    assert found == ["mole", "moles", "scarring", "epidermal"]
    # the longest term wins: one span for the whole disease name, not "squamous" alone
    text = "squamous cell carcinoma in situ"
    assert medical_spans(text) == [(0, len(text))]


# --- token weights on both tokenizers ------------------------------------------------------------------------


def test_span_mode_weights_follow_sentence_and_lexicon(tokenizer: Any) -> None:
    ids, weights = token_weights(CAPTION, tokenizer, CFG)
    assert ids == tokenizer(CAPTION, add_special_tokens=False)["input_ids"]
    assert weights.dtype == torch.float32 and weights.shape == (len(ids),)
    for sub, w_ans, medical in EXPECTED:
        expected = w_ans * (1.0 if medical else CFG.gamma)
        got = _weights_over(CAPTION, tokenizer, weights, sub)
        assert got and all(w == pytest.approx(expected) for w in got), (sub, got, expected)


def test_vocab_mode_gives_gamma_to_the_pieces_of_a_split_medical_word(tokenizer: Any) -> None:
    span_cfg = CFG
    vocab_cfg = CFG.model_copy(update={"reason_mode": "vocab"})
    ids, w_span = token_weights(CAPTION, tokenizer, span_cfg)
    _, w_vocab = token_weights(CAPTION, tokenizer, vocab_cfg)
    offsets = tokenizer(CAPTION, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    start = CAPTION.index("Biopsy")
    pieces = [i for i, (a, b) in enumerate(offsets) if a < start + len("Biopsy") and b > start]
    assert len(pieces) >= 2, "this test needs a tokenizer that splits 'Biopsy'"
    texts = [CAPTION[offsets[i][0] : offsets[i][1]] for i in pieces]
    assert not any(MEDICAL_PATTERN.search(t) for t in texts), texts
    assert all(float(w_span[i]) == pytest.approx(0.9) for i in pieces)
    assert all(float(w_vocab[i]) == pytest.approx(0.9 * CFG.gamma) for i in pieces)
    # Vocab mode marks exactly the tokens whose own text matches; span mode is never lower.
    own = vocab_medical_mask(tokenizer, ids)
    assert own.tolist() == [bool(MEDICAL_PATTERN.search(tokenizer.decode([i]))) for i in ids]
    assert bool((w_span >= w_vocab - 1e-7).all())
    assert not torch.allclose(w_span, w_vocab)


def test_vocab_mode_on_whole_tokens(tiny_tokenizer: Any) -> None:
    """In the tiny vocabulary " psoriasis" is one token: both modes give it full weight; "consistent with"
    is several tokens that match only together, so vocab mode drops them to gamma."""
    vocab_cfg = CFG.model_copy(update={"reason_mode": "vocab"})
    _, weights = token_weights(CAPTION, tiny_tokenizer, vocab_cfg)
    assert _weights_over(CAPTION, tiny_tokenizer, weights, "psoriasis") == [pytest.approx(0.7)]
    pieces = _weights_over(CAPTION, tiny_tokenizer, weights, "consistent with")
    assert len(pieces) >= 2 and pieces == [pytest.approx(0.07)] * len(pieces)


def test_normalisation_modes(tokenizer: Any) -> None:
    _, raw = token_weights(CAPTION, tokenizer, CFG)
    _, mean = token_weights(CAPTION, tokenizer, CFG.model_copy(update={"normalize": "mean"}))
    _, glob = token_weights(CAPTION, tokenizer, CFG.model_copy(update={"normalize": "global"}))
    assert float(mean.mean()) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(mean, raw / raw.mean())
    torch.testing.assert_close(glob, raw)
    assert float(raw.max()) <= 1.0 and float(raw.min()) >= CFG.gamma * min(0.3, 0.5, 0.7, 0.9) - 1e-7


def test_config_validation() -> None:
    with pytest.raises(ValueError, match=r"(?s)reason_mode.*'span' or 'vocab'"):
        STSConfig(reason_mode="words")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"(?s)normalize.*'mean', 'global' or 'none'"):
        STSConfig(normalize="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gamma"):
        STSConfig(gamma=-0.1)
    with pytest.raises(ValueError, match="w_first"):
        STSConfig(w_first=float("inf"))


# --- batches aligned with collator labels --------------------------------------------------------------------


def _completion(tokenizer: Any, caption: str) -> str:
    """The supervised text exactly as VLMCollator.render derives it from the chat template."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe this lesion."}]}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": caption}], tokenize=False)
    completion = full[len(prompt) :]
    return completion[: completion.index("<|im_end|>") + len("<|im_end|>")]


def _labels(rows: list[tuple[int, list[int]]], length: int) -> torch.Tensor:
    """(B, length) labels: `prompt_len` ignored positions, the completion ids, then padding."""
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for b, (prompt_len, ids) in enumerate(rows):
        labels[b, prompt_len : prompt_len + len(ids)] = torch.tensor(ids)
    return labels


def test_batch_weights_align_with_labels_and_template_tokens_weigh_one(tiny_tokenizer: Any) -> None:
    captions = [CAPTION, "A brown nodule. Dermoscopy is advised."]
    completions = [_completion(tiny_tokenizer, c) for c in captions]
    assert completions[0].startswith("\n</think>\n\n") and completions[0].endswith(CAPTION + "<|im_end|>")
    ids = [tiny_tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    labels = _labels([(5, ids[0]), (9, ids[1])], 9 + max(map(len, ids)) + 3)
    cfg = CFG.model_copy(update={"normalize": "mean"})
    weights = batch_token_weights(labels, completions, captions, tiny_tokenizer, cfg)

    assert weights.shape == labels.shape and weights.dtype == torch.float32
    assert bool((weights[labels == IGNORE] == 0).all())
    for b, caption in enumerate(captions):
        row = weights[b][labels[b] != IGNORE]
        tokens = tiny_tokenizer.convert_ids_to_tokens(ids[b])
        n_pre = tokens.index("</think>") + 2  # "\n", "</think>", "\n\n"
        assert tokens[n_pre - 1] == "ĊĊ" and tokens[-1] == "<|im_end|>"
        template = torch.cat([row[:n_pre], row[-1:]])
        torch.testing.assert_close(template, torch.ones_like(template))
        _, alone = token_weights(caption, tiny_tokenizer, cfg)  # the caption's tokens are the same in context
        torch.testing.assert_close(row[n_pre:-1], alone)
        assert float(row.mean()) == pytest.approx(1.0, abs=1e-6)

    flat = shifted_token_weights(weights, labels)
    targets = labels[:, 1:][labels[:, 1:] != IGNORE]
    assert flat.shape == targets.shape
    torch.testing.assert_close(flat, torch.cat([weights[b][labels[b] != IGNORE] for b in range(2)]))


def test_batch_weights_on_a_truncated_row_and_a_second_tokenizer(wordpiece_tokenizer: Any) -> None:
    tok = wordpiece_tokenizer
    completion = "answer : " + CAPTION + " ."
    ids = tok(completion, add_special_tokens=False)["input_ids"]
    keep = len(ids) - 6  # the collator cut the answer's tail
    labels = _labels([(3, ids[:keep])], 3 + len(ids))
    cfg = CFG.model_copy(update={"normalize": "mean"})
    offsets = tok(completion, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    n_pre = sum(1 for _, end in offsets if end <= completion.index(CAPTION))  # "answer :" template tokens
    assert n_pre >= 2
    weights = batch_token_weights(labels, [completion], [CAPTION], tok, cfg)[0][labels[0] != IGNORE]
    assert weights.shape == (keep,)
    assert weights[:n_pre].tolist() == [1.0] * n_pre
    assert float(weights[n_pre:].mean()) == pytest.approx(1.0, abs=1e-6)  # mean 1 over the kept caption tokens
    raw = batch_token_weights(labels, [completion], [CAPTION], tok, CFG)[0][labels[0] != IGNORE]
    torch.testing.assert_close(weights[n_pre:], raw[n_pre:] / raw[n_pre:].mean())


def test_batch_weights_fail_loudly_on_misaligned_input(tiny_tokenizer: Any) -> None:
    completion = _completion(tiny_tokenizer, CAPTION)
    ids = tiny_tokenizer(completion, add_special_tokens=False)["input_ids"]
    good = _labels([(2, ids)], len(ids) + 4)
    wrong = _labels([(2, ids), (2, ids[1:])], len(ids) + 4)
    with pytest.raises(ValueError, match="example 1"):
        batch_token_weights(wrong, [completion, completion], [CAPTION, CAPTION], tiny_tokenizer)
    with pytest.raises(ValueError, match="does not occur"):
        batch_token_weights(good, [completion], ["Another caption."], tiny_tokenizer)
    gap = good.clone()
    gap[0, 5] = IGNORE
    with pytest.raises(ValueError, match="contiguous"):
        batch_token_weights(gap, [completion], [CAPTION], tiny_tokenizer)
    with pytest.raises(ValueError, match="must match"):
        batch_token_weights(good, [completion, completion], [CAPTION], tiny_tokenizer)
