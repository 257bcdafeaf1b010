"""Turn raw model output into something a metric can score: a label (Stages 1-2) or a caption (Stage 3).

The pipeline for a diagnosis answer is

    raw text ──strip_thinking──▶ visible text ──extract_answer──▶ answer phrase ──match_label──▶ label | "Unknown"

* ``strip_thinking`` removes ``<think>…</think>`` blocks. Qwen3 "Thinking" chat templates put the opening
  ``<think>`` in the *prompt*, so a generation usually contains only the closing tag: everything before a
  dangling ``</think>`` is reasoning. A thought that never closed (``<think>`` without ``</think>``, or a thinking
  model's output without ``</think>``) ran out of tokens: the answer is *truncated* and is never guessed from
  the half-finished reasoning.
* ``extract_answer`` takes the text after the last "Final diagnosis:" / "Diagnosis:" (prompts P2/P3 ask for
  that line), else the last non-empty line; it removes markdown, brackets, a leading "This image shows" (the
  Stage 2 training target) and trailing punctuation.
* ``match_label`` maps the phrase to one of the allowed labels, most trustworthy rule first:

  1. **exact**: the phrase equals a label or one of its aliases (``labels.ALIASES``, e.g. "bcc"), ignoring case,
     punctuation and "&" vs "and". For numbered group labels ("3. Malignant Skin Tumors") the name without
     its number also counts.
  2. **group number** (numbered labels only): the phrase starts with a label's number — "3", "3.",
     "3. Malignant", "Group 3:".
  3. **containment**: a label or alias occurs in the phrase as whole words ("basal cell carcinoma nodular").
     When several do, the one that starts earliest wins (the model's first-stated diagnosis), then the
     longest form.
  4. **word overlap**: the label sharing the most *content words* with the phrase (lowercase alphanumeric
     words of ≥ 3 letters, minus a few generic words such as "skin", "disease", "lesion"; a plural "s" is
     ignored). Ties go to the label with more content words (the more specific name), then to the first in
     ``labels`` order. "squamous cell carcinoma" shares 3 words with "squamous cell carcinoma in situ" and 2
     with "basal cell carcinoma", so it resolves to the former — as the original did.
  5. **fuzzy**: the best ``rapidfuzz.fuzz.token_sort_ratio`` against the label names (not the short aliases,
     where a ratio is meaningless: "mold" vs "mole" scores 75) at or above ``fuzzy_threshold`` (70).
  6. otherwise ``labels.UNKNOWN``, which every metric counts as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

from hikari.data.labels import ALIASES, UNKNOWN

DEFAULT_FUZZY_THRESHOLD = 70.0

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)

# "Final diagnosis:", "**Diagnosis**:", "Diagnosis -" … but not "Differential diagnosis:" (a list, not the answer).
_DIAGNOSIS_MARKER = re.compile(
    r"(?<!differential )\b(?:final\s+)?diagnosis\s*[*_]*\s*[:：]",
    re.IGNORECASE,
)
_LEADING_PHRASES = re.compile(
    r"^(?:(?:this|the)\s+(?:image|photo|photograph|picture)\s+(?:shows|depicts|is(?:\s+consistent\s+with)?)|"
    r"(?:the\s+)?(?:final\s+)?(?:answer|diagnosis)\s+is)\s*[:\-]?\s*",
    re.IGNORECASE,
)
_LEADING_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
_MARKDOWN = re.compile(r"[*_`#>]+")
_BULLET = re.compile(r"^\s*[-•·]\s*")
_BRACKETS = re.compile(r"[\[\]{}\"“”]")
_TRAILING = re.compile(r"[\s.!?,;:]+$")
_NUMBERED_LABEL = re.compile(r"^\s*(\d+)\s*[.)]\s*(.+)$")
_LEADING_NUMBER = re.compile(r"^(?:(?:category|group|class)\s*)?(\d+)(?=$|[\s.):,-])", re.IGNORECASE)
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

# Words too generic to identify a label on their own (they appear in several group names and in free text).
_GENERIC_WORDS = frozenset(
    {
        "and", "the", "with", "for", "from", "this", "that", "are", "not", "skin", "disease", "diseases",
        "disorder", "disorders", "condition", "conditions", "lesion", "lesions", "image", "shows", "likely",
        "most", "type", "form", "diagnosis", "final", "consistent", "possible", "probable",
    }
)  # fmt: skip


@dataclass(frozen=True)
class ParsedAnswer:
    """A diagnosis answer: `label` is one of the allowed labels or ``UNKNOWN``; `answer_text` the phrase
    that was matched; `truncated` is True when the model's thinking never finished (label is then Unknown)."""

    label: str
    answer_text: str
    truncated: bool


@dataclass(frozen=True)
class ParsedCaption:
    """A caption with any reasoning removed; `text` is "" when `truncated` (the thought never finished)."""

    text: str
    truncated: bool


def strip_thinking(text: str) -> tuple[str, bool]:
    """Remove reasoning from a generation; return ``(visible_text, truncated)``.

    Closed ``<think>…</think>`` blocks are removed; everything up to the last dangling ``</think>`` is removed
    (the opening tag was in the prompt); an opened ``<think>`` that never closes marks the output truncated and
    only the text before it is kept.
    """
    visible = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(visible))
    if closes:
        visible = visible[closes[-1].end() :]
    opened = _THINK_OPEN.search(visible)
    truncated = opened is not None
    if opened is not None:
        visible = visible[: opened.start()]
    return visible.strip(), truncated


def _clean_phrase(text: str) -> str:
    """Strip markdown, brackets, bullets, a leading "This image shows" / article and trailing punctuation."""
    text = _MARKDOWN.sub("", text)
    text = _BRACKETS.sub("", text)
    text = _BULLET.sub("", text).strip()
    # Two passes: "The diagnosis is: This image shows …" style nesting occurs in chatty outputs.
    for _ in range(2):
        text = _LEADING_PHRASES.sub("", text).strip()
    text = _LEADING_ARTICLE.sub("", text)
    return _TRAILING.sub("", text).strip()


def extract_answer(text: str) -> str:
    """The answer phrase of a (thinking-free) generation; "" when there is none.

    After the last "Final diagnosis:" / "Diagnosis:" (case-insensitive, markdown tolerated) when present —
    the rest of that line, or the next non-empty line when the marker ends its line — else the last line that
    is non-empty after cleaning.
    """
    markers = list(_DIAGNOSIS_MARKER.finditer(text))
    if markers:
        tail = text[markers[-1].end() :]
        for line in tail.splitlines():
            cleaned = _clean_phrase(line)
            if cleaned:
                return cleaned
        return ""
    for line in reversed(text.splitlines()):
        cleaned = _clean_phrase(line)
        if cleaned:
            return cleaned
    return ""


def _norm(text: str) -> str:
    """Lowercase, "&" → "and", every run of non-alphanumerics → one space."""
    return _NON_ALNUM.sub(" ", text.lower().replace("&", " and ")).strip()


def _stem(word: str) -> str:
    # Drop a plural "s" (tumors/tumor, cysts/cyst) but not the "s" of psoriasis, planus, sclerosis.
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "is", "us")):
        return word[:-1]
    return word


def _content_words(text: str) -> set[str]:
    return {_stem(w) for w in _norm(text).split() if len(w) >= 3 and w not in _GENERIC_WORDS}


def _label_forms(label: str) -> list[str]:
    """The normalised strings that name `label`: itself, its aliases, and for "3. Name" also "Name"."""
    forms = [_norm(label)]
    numbered = _NUMBERED_LABEL.match(label)
    if numbered:
        forms.append(_norm(numbered.group(2)))
    forms.extend(_norm(a) for a in ALIASES.get(label, ()))
    return list(dict.fromkeys(f for f in forms if f))


def _contains(haystack: str, needle: str) -> int:
    """Start index of `needle` as whole words in `haystack` (both normalised), or -1."""
    match = re.search(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])", haystack)
    return match.start() if match else -1


def match_label(answer: str, labels: Sequence[str], fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD) -> str:
    """Map an answer phrase to one of `labels` (exact → group number → containment → word overlap → fuzzy),
    or ``UNKNOWN``. See the module docstring for the exact rules and tie-breaks."""
    if not labels:
        raise ValueError("match_label needs at least one label")
    text = _norm(answer)
    if not text:
        return UNKNOWN
    forms = {label: _label_forms(label) for label in labels}

    # 1. exact
    for label in labels:
        if text in forms[label]:
            return label

    # 2. a group number ("3", "3. Malignant") — only when the labels are numbered
    numbers = {m.group(1): label for label in labels if (m := _NUMBERED_LABEL.match(label))}
    if numbers:
        leading = _LEADING_NUMBER.match(answer.strip().lstrip("*#_ "))
        if leading and leading.group(1) in numbers:
            return numbers[leading.group(1)]

    # 3. containment: earliest occurrence, then longest form
    best: tuple[int, int, int] | None = None  # (start, -len(form), label index)
    for index, label in enumerate(labels):
        for form in forms[label]:
            start = _contains(text, form)
            if start >= 0 and (best is None or (start, -len(form), index) < best):
                best = (start, -len(form), index)
    if best is not None:
        return labels[best[2]]

    # 4. word overlap: most shared content words; ties → more content words in the label, then label order
    answer_words = _content_words(answer)
    if answer_words:
        best_overlap: tuple[int, int, int] | None = None  # (-shared, -label words, label index)
        for index, label in enumerate(labels):
            label_words = _content_words(label)
            shared = len(answer_words & label_words)
            if shared and (best_overlap is None or (-shared, -len(label_words), index) < best_overlap):
                best_overlap = (-shared, -len(label_words), index)
        if best_overlap is not None:
            return labels[best_overlap[2]]

    # 5. fuzzy against the label names (and un-numbered group names), never the short aliases
    best_label, best_score = UNKNOWN, -1.0
    for label in labels:
        candidates = [_norm(label)]
        numbered = _NUMBERED_LABEL.match(label)
        if numbered:
            candidates.append(_norm(numbered.group(2)))
        score = max(fuzz.token_sort_ratio(text, c) for c in candidates)
        if score > best_score:
            best_label, best_score = label, score
    return best_label if best_score >= fuzzy_threshold else UNKNOWN


def parse_diagnosis(
    raw: str,
    labels: Sequence[str],
    thinking: bool = False,
    fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD,
) -> ParsedAnswer:
    """Parse a Stage 1/2 generation into a label.

    `thinking=True` declares a reasoning model whose template opens ``<think>`` in the prompt: an output with no
    ``</think>`` then never finished thinking and is reported truncated (label Unknown) rather than parsed.
    """
    visible, truncated = strip_thinking(raw)
    if thinking and not _THINK_CLOSE.search(raw):
        truncated = True
    if truncated:
        return ParsedAnswer(label=UNKNOWN, answer_text="", truncated=True)
    answer = extract_answer(visible)
    return ParsedAnswer(label=match_label(answer, labels, fuzzy_threshold), answer_text=answer, truncated=False)


def parse_caption(raw: str, thinking: bool = False) -> ParsedCaption:
    """Parse a Stage 3 generation: the visible text, or "" and truncated=True when the thought never closed
    (`thinking=True` declares a reasoning model, so a missing ``</think>`` means truncated)."""
    visible, truncated = strip_thinking(raw)
    if thinking and not _THINK_CLOSE.search(raw):
        truncated = True
    if truncated:
        return ParsedCaption(text="", truncated=True)
    return ParsedCaption(text=visible, truncated=False)
