"""Training: the stage recipe (one function for every published model), the Trainer with the fused weighted
cross-entropy, Selective Token Supervision, LoRA penalties, the penalty's relative strength, the collapse guard and
the Stage 3 ablation.

    from hikari.training import run_training, HikariTrainer, fused_weighted_cross_entropy, lora_penalty
"""

from hikari.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "ablation": ("AblationArm", "run_stage3_ablation"),
    "collapse": ("CollapseGuard", "CollapseReport", "diagnose"),
    "cross_entropy": ("CEStats", "fused_weighted_cross_entropy", "naive_weighted_cross_entropy"),
    "data": ("STSCollator", "SupervisedVLMDataset", "build_examples"),
    "evaluate": ("evaluate_model",),
    "penalties": ("lora_factors", "lora_penalty", "lora_penalty_gradients"),
    "stages": ("RunResult", "read_run_info", "run_training"),
    "strength": ("PenaltyStrength", "PenaltyStrengthProbe", "equivalent_beta", "match_beta",
                 "measure_penalty_strength", "reference_strength"),
    "sts": ("batch_token_weights", "token_weights"),
    "trainer": ("HikariTrainer", "answer_token_loss"),
})  # fmt: skip
