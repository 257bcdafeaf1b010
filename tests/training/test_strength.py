"""The penalty's relative strength: measured inside the real trainer, linear in β, and the β that matches it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hikari.config import load_config, resolve_recipe
from hikari.training.strength import (
    PenaltyStrength,
    PenaltyStrengthProbe,
    equivalent_beta,
    match_beta,
    measure_from_base,
    measure_penalty_strength,
    recipe_strength,
    reference_strength,
)
from tests.training.conftest import CPU_OVERRIDES

STEPS = 4


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, synth_dir: Path, synth_split: Path):
    """measure_from_base on the tiny model at β 0.01 (subaru and deneb one step each, then antares measured)."""
    work = tmp_path_factory.mktemp("strength")
    overrides = [*CPU_OVERRIDES, "train.learning_rate=3e-3", "train.batch_size=4"]
    result = measure_from_base(tiny_model_dir, synth_dir, synth_split, work, overrides=overrides, steps=STEPS,
                               schedule_steps=50)  # fmt: skip
    return work, overrides, result


def test_measured_strength_is_what_adam_sees(chain) -> None:
    work, _, result = chain
    assert result.penalty == "ibr_ab" and result.beta == 0.01 and result.steps == STEPS
    assert len(result.norm_ratios) == STEPS and len(result.learning_rates) == STEPS
    assert result.elements_a > 0 and result.elements_b > 0
    assert 0 < result.strength < math.inf
    q25, q50, q75 = result.quantiles_a
    assert q25 <= q50 == result.strength <= q75
    # B starts at zero, so its penalty gradient is small next to its CE gradient; A's is not.
    assert result.strength_b < result.strength
    # The run stopped after the measured steps (the schedule is that of a 50-step run).
    log = (work / "antares" / "trainer_state.json")
    assert not log.exists() or '"global_step": 4' in log.read_text()


def test_strength_grows_with_beta_and_the_matched_beta_reaches_the_reference(chain, synth_dir: Path,
                                                                            synth_split: Path) -> None:  # fmt: skip
    """Nearly linear in β (10× β gives 10-13×: a stronger penalty also shrinks A and B); `match_beta` re-measures
    until the run's strength is within 5 % of the reference's."""
    work, overrides, at_001 = chain
    runs = iter(range(100))

    def measure(beta: float) -> PenaltyStrength:
        return recipe_strength(work / "deneb", synth_dir, synth_split, work / f"m{next(runs)}", beta=beta,
                               overrides=overrides, steps=STEPS, schedule_steps=50)  # fmt: skip

    at_01 = measure(0.1)
    assert 8 * at_001.strength < at_01.strength < 14 * at_001.strength
    target = PenaltyStrength.from_dict({**at_001.to_dict(), "strength": 20 * at_001.strength})
    matched = match_beta(measure, target, beta=0.01, iterations=4)
    assert matched.converged, matched
    assert matched.measured[0] == (0.01, pytest.approx(at_001.strength))
    assert abs(matched.measured[-1][1] / target.strength - 1) <= 0.05
    assert 0.1 < matched.beta < 0.2


def test_equivalent_beta_refuses_what_it_cannot_scale(chain) -> None:
    _, _, measured = chain
    with pytest.raises(ValueError, match="beta"):
        equivalent_beta(0.02, measured, measured)
    off = PenaltyStrength.from_dict({**measured.to_dict(), "strength": 0.0})
    with pytest.raises(ValueError, match="penalty must be on"):
        equivalent_beta(0.01, measured, off)


def test_probe_without_gradients_says_why() -> None:
    with pytest.raises(RuntimeError, match="closed-form"):
        PenaltyStrengthProbe(3).result()
    with pytest.raises(ValueError, match="at least 2"):
        PenaltyStrengthProbe(1)


def test_a_run_without_penalty_is_refused(synth_dir: Path, synth_split: Path, tmp_path: Path) -> None:
    config = load_config(resolve_recipe("vega"), [f"data.dir={synth_dir}", f"data.split={synth_split}",
                                                  f"output_dir={tmp_path / 'v'}", f"model.previous_run={tmp_path}"])
    with pytest.raises(ValueError, match="penalty is off"):
        measure_penalty_strength(config)


def test_shipped_reference_is_the_8b_measurement() -> None:
    """The reference the demo scales from is the benchmark's output at Qwen3-VL-8B width with the shipped settings."""
    ref = reference_strength("antares")
    assert ref.penalty == "ibr_ab" and ref.beta == 0.01
    assert ref.meta["hidden_size"] == 4096 and ref.meta["vision_hidden_size"] == 1152
    assert 0 < ref.strength < math.inf and ref.steps >= 2
    with pytest.raises(FileNotFoundError, match="penalty_strength.py"):
        reference_strength("vega")


def test_strength_is_the_hand_computed_median_over_lora_a() -> None:
    """Two steps on a hand-made adapter: r_e = mean|g_pen| / RMS(g_ce) per element, median over A; an element with
    neither gradient is left out, one with only a penalty gradient counts as infinite."""
    import torch

    from hikari.training.penalties import LoraFactor

    a = torch.nn.Parameter(torch.zeros(1, 4))
    b = torch.nn.Parameter(torch.zeros(2, 1))
    probe = PenaltyStrengthProbe(2, stop=False)
    ce_steps = [torch.tensor([[2.0, 0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0, 0.0]])]
    pen_steps = [torch.tensor([[1.0, 0.0, 1.0, 3.0]]), torch.tensor([[1.0, 0.0, 3.0, 3.0]])]
    for step, (ce, pen) in enumerate(zip(ce_steps, pen_steps, strict=True), start=1):
        a.grad, b.grad = ce.clone(), torch.ones(2, 1)
        probe.observe_gradients(step, [LoraFactor(a, b, 1.0)], "ibr_ab", 0.01, [a, b], [pen, torch.zeros(2, 1)])
    result = probe.result()
    # element 0: mean|pen| 1 / RMS(2, 0) = √2 → 0.7071; element 1: no force, left out; element 2: 2 / 1 = 2;
    # element 3: 3 / 0 = inf. Median of (0.707, 2, inf) = 2.
    assert result.elements_a == 3 and result.strength == pytest.approx(2.0)
    assert result.share_a_dominated == pytest.approx(2 / 3)
    assert result.strength_b == 0.0 and result.steps == 2
    assert result.norm_ratios[0] == pytest.approx(math.sqrt(11) / math.sqrt(5 + 2))
