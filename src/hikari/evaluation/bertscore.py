"""BERTScore-F for Stage 3 captions: an optional metric (``pip install 'hikari[bertscore]'``) with the paper's
settings, roberta-large layer 17, "en", no baseline rescaling, mean F ×100."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

BERTSCORE_MODEL = "roberta-large"
BERTSCORE_LAYER = 17


class BertScoreUnavailable(RuntimeError):
    """BERTScore was requested but the package or its model cannot be loaded (offline, not installed)."""


def bert_score_f(
    references: Sequence[str],
    hypotheses: Sequence[str],
    model_type: str = BERTSCORE_MODEL,
    num_layers: int | None = BERTSCORE_LAYER,
    lang: str = "en",
    batch_size: int = 16,
    device: str | None = None,
) -> float:
    """Mean BERTScore F1 ×100 (no baseline rescaling). `model_type` may be a local directory (then give
    `num_layers`). Raises `BertScoreUnavailable` with instructions when the package or model is missing."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"BERTScore needs as many generated captions as references (>= 1), got {len(hypotheses)} "
                         f"and {len(references)}")  # fmt: skip
    try:
        bert_score = importlib.import_module("bert_score")  # optional extra: hikari[bertscore]
    except ImportError as err:
        raise BertScoreUnavailable(
            "BERTScore needs the bert_score package: pip install 'hikari[bertscore]' (or pip install bert-score)"
        ) from err
    try:
        _, _, f1 = bert_score.score(
            list(hypotheses), list(references), model_type=model_type, num_layers=num_layers, lang=lang,
            batch_size=batch_size, device=device, rescale_with_baseline=False, verbose=False,
        )  # fmt: skip
    except (OSError, ValueError) as err:
        raise BertScoreUnavailable(
            f"could not load the BERTScore model {model_type!r}: {err}\n"
            f"Download it once while online (huggingface-cli download {model_type}) and run with "
            "HF_HUB_OFFLINE=1, or pass a local model directory with its layer (--bertscore-model DIR "
            "--bertscore-layer N)."
        ) from err
    return float(f1.mean()) * 100.0
