"""Scoring predictions: answer parsing, the prediction file format, diagnosis and caption metrics, reports.

    from hikari.evaluation import read_predictions, evaluate_diagnosis, evaluate_captions, parse_diagnosis
"""

from hikari.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "bertscore": ("BertScoreUnavailable", "bert_score_f"),
    "captions": ("bleu_scores", "caption_metrics", "disease_mention_rate", "evaluate_captions", "rouge_scores"),
    "diagnosis": ("diagnosis_metrics", "evaluate_diagnosis"),
    "parsing": ("ParsedAnswer", "ParsedCaption", "match_label", "parse_caption", "parse_diagnosis", "strip_thinking"),
    "predictions": ("Prediction", "PredictionFileError", "append_predictions", "read_predictions"),
    "report": ("write_report",),
})  # fmt: skip
