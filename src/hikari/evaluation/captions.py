"""Caption metrics for Stage 3, with the exact conventions that reproduce the HIKARI paper's numbers.

* BLEU-1..4: ``nltk`` ``corpus_bleu`` over the whole set (one reference per image), tokens =
  ``caption.lower().split()``, ``SmoothingFunction().method1``, cumulative uniform weights, ×100.
* ROUGE-1/2/L: ``rouge_score.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)``,
  ``score(reference, generated)`` on the raw strings, F-measure averaged over images, ×100.
* BERTScore-F (optional, ``pip install 'hikari[bertscore]'``): ``bert_score`` with roberta-large layer 17, "en",
  no baseline rescaling, mean F ×100.
* Disease mention rate: % of generated captions (lowercased) containing any alias of the image's true disease
  (``labels.ALIASES``) as a substring — or, failing that, every word longer than 3 letters of the disease name.
* Length statistics in whitespace words, generated vs reference.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
from rouge_score import rouge_scorer

from hikari.data.labels import ALIASES
from hikari.evaluation.bertscore import BERTSCORE_LAYER, BERTSCORE_MODEL, bert_score_f
from hikari.evaluation.predictions import Prediction
from hikari.evaluation.stats import DEFAULT_LEVEL, bleu_sentence_stats, caption_intervals

BLEU_WEIGHTS: dict[str, tuple[float, ...]] = {
    "bleu_1": (1.0, 0.0, 0.0, 0.0),
    "bleu_2": (0.5, 0.5, 0.0, 0.0),
    "bleu_3": (1 / 3, 1 / 3, 1 / 3, 0.0),
    "bleu_4": (0.25, 0.25, 0.25, 0.25),
}
ROUGE_KEYS: dict[str, str] = {"rouge1": "rouge_1", "rouge2": "rouge_2", "rougeL": "rouge_l"}


def _check_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} generated captions")
    if not references:
        raise ValueError("no captions to score")


def bleu_scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 ×100 (one reference per hypothesis), keys ``bleu_1`` … ``bleu_4``."""
    _check_pairs(references, hypotheses)
    refs = [[r.lower().split()] for r in references]
    hyps = [h.lower().split() for h in hypotheses]
    smoothing = SmoothingFunction().method1
    return {
        key: float(corpus_bleu(refs, hyps, weights=weights, smoothing_function=smoothing)) * 100.0
        for key, weights in BLEU_WEIGHTS.items()
    }


def rouge_per_image(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, np.ndarray]:
    """ROUGE-1/2/L F-measure ×100 of every caption pair: {``rouge_1``, ``rouge_2``, ``rouge_l``: (n,) array}."""
    _check_pairs(references, hypotheses)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    out = {name: np.zeros(len(references)) for name in ROUGE_KEYS.values()}
    for i, (reference, hypothesis) in enumerate(zip(references, hypotheses)):
        scores = scorer.score(reference, hypothesis)
        for key, name in ROUGE_KEYS.items():
            out[name][i] = scores[key].fmeasure * 100.0
    return out


def rouge_scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure ×100 over caption pairs, keys ``rouge_1``, ``rouge_2``, ``rouge_l``."""
    return {name: float(np.mean(values)) for name, values in rouge_per_image(references, hypotheses).items()}


def mentions_disease(caption: str, disease: str) -> bool:
    """Whether `caption` names `disease`: any alias as a lowercase substring, else every word of the disease
    name longer than 3 letters appears in it."""
    text = caption.lower()
    name = disease.lower().strip()
    if any(alias in text for alias in (*ALIASES.get(name, ()), name)):
        return True
    words = [w for w in name.split() if len(w) > 3]
    return bool(words) and all(w in text for w in words)


def disease_mention_rate(captions: Sequence[str], diseases: Sequence[str]) -> float:
    """% of captions that mention their image's true disease (see `mentions_disease`)."""
    if len(captions) != len(diseases):
        raise ValueError(f"{len(captions)} captions but {len(diseases)} diseases")
    if not captions:
        raise ValueError("no captions to score")
    return sum(mentions_disease(c, d) for c, d in zip(captions, diseases)) / len(captions) * 100.0


def length_stats(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Mean and median length in whitespace words of generated and reference captions."""
    _check_pairs(references, hypotheses)
    gen = [len(h.split()) for h in hypotheses]
    ref = [len(r.split()) for r in references]
    return {
        "generated_words_mean": statistics.fmean(gen),
        "generated_words_median": float(statistics.median(gen)),
        "reference_words_mean": statistics.fmean(ref),
        "reference_words_median": float(statistics.median(ref)),
    }


def caption_metrics(
    references: Sequence[str],
    hypotheses: Sequence[str],
    diseases: Sequence[str | None] | None = None,
    bertscore: bool = False,
    bertscore_model: str = BERTSCORE_MODEL,
    bertscore_layer: int | None = BERTSCORE_LAYER,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """All caption metrics for aligned references/hypotheses; `diseases` (true disease per pair, None when
    unknown) enables the mention rate over the pairs whose disease is known (``n_mention``).

    With `bootstrap` > 0 also ``ci`` = {metric: {value, ci_low, ci_high, n}} for BLEU-1..4 (corpus BLEU
    recomputed per resample), ROUGE-1/2/L and the mention rate, and ``bootstrap`` = {resamples, seed, level}
    (see `hikari.evaluation.stats`). BERTScore gets no interval."""
    metrics: dict[str, Any] = {"n": len(references)}
    metrics.update(bleu_scores(references, hypotheses))
    rouge = rouge_per_image(references, hypotheses)
    metrics.update({name: float(np.mean(values)) for name, values in rouge.items()})
    per_image = dict(rouge)
    if diseases is not None:
        known = [(h, d) for h, d in zip(hypotheses, diseases) if d]
        if known:
            metrics["mention_rate"] = disease_mention_rate([h for h, _ in known], [d for _, d in known])
            metrics["n_mention"] = len(known)
            per_image["mention_rate"] = np.array(
                [100.0 * mentions_disease(h, d) if d else np.nan for h, d in zip(hypotheses, diseases)]
            )
    if bertscore:
        metrics["bertscore_f"] = bert_score_f(references, hypotheses, bertscore_model, bertscore_layer)
    metrics.update(length_stats(references, hypotheses))
    if bootstrap > 0:
        stats = bleu_sentence_stats([r.lower().split() for r in references], [h.lower().split() for h in hypotheses])
        metrics["ci"] = caption_intervals(stats, BLEU_WEIGHTS, per_image, metrics, n_resamples=bootstrap, seed=seed,
                                          level=level)  # fmt: skip
        metrics["bootstrap"] = {"resamples": bootstrap, "seed": seed, "level": level}
    return metrics


def scored_captions(predictions: Sequence[Prediction]) -> list[Prediction]:
    """The caption predictions `evaluate_captions` scores (status "success", not truncated); raises when none is
    left or one has no reference caption."""
    scored = [p for p in predictions if p.status == "success" and not p.truncated]
    if not scored:
        raise ValueError(f"none of the {len(predictions)} caption predictions can be scored")
    missing = [p.id for p in scored if p.ground_truth is None]
    if missing:
        raise ValueError(f"{len(missing)} caption predictions have no reference caption (first: id {missing[0]})")
    return scored


def evaluate_captions(
    predictions: Sequence[Prediction],
    diseases: dict[str, str] | None = None,
    bertscore: bool = False,
    bertscore_model: str = BERTSCORE_MODEL,
    bertscore_layer: int | None = BERTSCORE_LAYER,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """Score caption predictions. Truncated items (reasoning never finished) are not scored but counted
    (``n_truncated``), as are failed ones (``n_failed``). True diseases come from `diseases` (file name →
    disease) when given, else from each prediction's `disease` field. `bootstrap`, `seed`, `level`: CIs, see
    `caption_metrics`."""
    scored = scored_captions(predictions)
    truth = [(diseases or {}).get(p.file_name) or p.disease for p in scored]
    metrics = caption_metrics(
        [p.ground_truth or "" for p in scored], [p.parsed for p in scored],
        diseases=truth if any(truth) else None, bertscore=bertscore, bertscore_model=bertscore_model,
        bertscore_layer=bertscore_layer, bootstrap=bootstrap, seed=seed, level=level,
    )  # fmt: skip
    metrics["n_truncated"] = sum(p.truncated for p in predictions)
    metrics["n_failed"] = sum(p.status != "success" for p in predictions)
    return metrics
