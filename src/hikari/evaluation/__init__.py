"""Scoring predictions: answer parsing, the prediction file format, diagnosis and caption metrics, reports.

    from hikari.evaluation import read_predictions, evaluate_diagnosis, evaluate_captions, parse_diagnosis

Uncertainty (issue 18): `evaluate_diagnosis/evaluate_captions(..., bootstrap=2000)` add CIs; `compare_diagnosis`,
`compare_captions`; `evaluate_calibration`; `subgroup_report` (see docs/statistics.md).
"""

from hikari.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "bertscore": ("BertScoreUnavailable", "bert_score_f"),
    "calibration": ("calibration_metrics", "evaluate_calibration", "expected_calibration_error", "fit_temperature"),
    "compare": ("compare_captions", "compare_diagnosis", "mcnemar_exact"),
    "captions": ("bleu_scores", "caption_metrics", "disease_mention_rate", "evaluate_captions", "rouge_scores"),
    "diagnosis": ("diagnosis_metrics", "evaluate_diagnosis"),
    "parsing": ("ParsedAnswer", "ParsedCaption", "match_label", "parse_caption", "parse_diagnosis", "strip_thinking"),
    "predictions": ("Prediction", "PredictionFileError", "append_predictions", "read_predictions"),
    "report": ("write_report",),
    "stats": ("caption_intervals", "diagnosis_intervals", "format_interval"),
    "subgroups": ("subgroup_report",),
})  # fmt: skip
