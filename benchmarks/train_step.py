"""Training-step overhead of Selective Token Supervision + the LoRA penalty + the collapse guard, vs plain training.

Three arms run in this process on the same batches (synthetic SkinCAP captions, the tiny Qwen3-VL with LoRA):
collate (STS weights are computed there) + forward + backward + optimizer step.

- plain: plain CE, no penalty, no guard;
- sts: STS weights (span, mean) + ibr_delta penalty, applied as `HikariTrainer` does by default: its closed-form
  gradient added once per optimizer step after the backward pass (`finish_step_gradients`);
- sts_guard: the same + the `CollapseGuard` callbacks as the Trainer calls them (penalty/CE gradient norms handed
  over by `finish_step_gradients` and ΔW norm every `grad_every` steps), without caption probes; one probe
  (greedy captions of `--probe-images` images, `--probe-tokens` new tokens) is timed separately and amortised
  over `probe_every` steps.

The arms are interleaved step by step (every arm trains on the same batch, in a rotating order) so machine noise
and drift hit all alike; a round's time per arm is its mean step time over `--steps` steps (a mean, so the
guard's every-Nth-step measurements count), and each ratio is the median over rounds of arm / plain within the
round. Times are the process's CPU time by default (`--clock wall` for elapsed time). Prints one JSON object:
`overhead_ratio` = sts_guard / plain (STS + penalty + guard without probes; target ≤ 1.05),
`overhead_ratio_sts` = sts / plain, and `overhead_ratio_with_probes` (probe cost amortised over probe_every).

Run: `python benchmarks/train_step.py [--steps 10 --rounds 30 --batch 8]` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per arm and round")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="cpu: the process's CPU time (all its "
                    "threads; steadier than wall time on a shared machine, where other processes take turns on the "
                    "cores), wall: elapsed time")
    ap.add_argument("--grad-every", type=int, default=10, help="guard: steps between gradient/ΔW measurements")
    ap.add_argument("--probe-every", type=int, default=50, help="guard: steps between caption probes")
    ap.add_argument("--probe-images", type=int, default=8)
    ap.add_argument("--probe-tokens", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    from transformers import TrainerControl

    from hikari.config import GuardConfig, LossConfig, STSConfig
    from hikari.data.skincap import read_skincap
    from hikari.demo.synth import write_synthetic_skincap
    from hikari.demo.tiny import build_tiny_qwen3vl
    from hikari.models.batching import VLMCollator
    from hikari.models.load import load_model, load_processor
    from hikari.models.lora import add_lora
    from hikari.training.collapse import CollapseGuard
    from hikari.training.data import STSCollator, SupervisedVLMDataset, build_examples
    from hikari.training.penalties import lora_factors
    from hikari.training.trainer import answer_token_loss, finish_step_gradients

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_skincap(root / "data", n=150, seed=0)
        records = read_skincap(root / "data").records
        model_dir = build_tiny_qwen3vl(root / "model", seed=0)
        processor = load_processor(str(model_dir))
        dataset = SupervisedVLMDataset(build_examples(records, "caption", seed=0), seed=0, max_image_size=96)
        items = [dataset[i] for i in range(len(dataset))]
        arms = {
            "plain": (VLMCollator(processor), "none"),
            "sts": (STSCollator(processor, sts=STSConfig(reason_mode="span", normalize="mean")), "ibr_delta"),
            "sts_guard": (STSCollator(processor, sts=STSConfig(reason_mode="span", normalize="mean")), "ibr_delta"),
        }
        loss_config = LossConfig(penalty="ibr_delta")  # the published β and σ²
        guard = CollapseGuard(GuardConfig(grad_every=args.grad_every, probe_every=10**9), loss=loss_config)
        guard.gradients_from_trainer = True  # as HikariTrainer sets it
        control = TrainerControl()
        counter = {"step": 0}
        models = {}
        for name in arms:
            model = add_lora(load_model(str(model_dir), dtype="fp32"), r=16, alpha=16, dropout=0.0, target="both")
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            models[name] = (model, optimizer, lora_factors(model))  # the trainer keeps the factors for the run

        def step(name: str, i: int) -> float:
            collator, penalty = arms[name]
            model, optimizer, factors = models[name]
            start = clock()
            guarded = name == "sts_guard"
            if guarded:
                state = SimpleNamespace(global_step=counter["step"], max_steps=0)
                guard.on_step_begin(None, state, control, model=model)
            chunk = [items[(i * args.batch + j) % len(items)] for j in range(args.batch)]
            batch = collator(chunk)
            loss, _ = answer_token_loss(model, batch, None)
            loss.backward()
            if penalty != "none":
                finish_step_gradients(factors, penalty, loss_config.beta, loss_config.sigma2,
                                      guards=[guard] if guarded else (), step=counter["step"] + 1)  # fmt: skip
            if guarded:
                guard.on_pre_optimizer_step(None, state, control, model=model)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if guarded:
                counter["step"] += 1
                state.global_step = counter["step"]
                guard.on_step_end(None, state, control, model=model)
                guard._pending.clear()  # the Trainer hands these to its log; nothing consumes them here
            return clock() - start

        for name in arms:  # warm-up
            for i in range(3):
                step(name, i)
        rounds: dict[str, list[float]] = {name: [] for name in arms}
        names = list(arms)
        for r in range(args.rounds):
            # Step by step, every arm trains on the same batch, in an order that rotates with the step (each arm
            # follows each other one equally often, so switching models costs all arms alike and machine drift
            # within a round hits all arms). A round's time per arm is its summed step time; with
            # steps = grad_every, every round holds exactly one of the guard's measurement steps.
            total = dict.fromkeys(names, 0.0)
            for i in range(r * args.steps, (r + 1) * args.steps):
                order = names[i % len(names) :] + names[: i % len(names)]
                for name in order if (i // len(names)) % 2 == 0 else order[::-1]:
                    total[name] += step(name, i)
            for name in names:
                rounds[name].append(total[name] / args.steps)
        # One caption probe as the guard runs it (greedy generation on the in-memory LoRA model).
        images = [item["messages"][0]["content"][0]["image"] for item in items[: args.probe_images]]
        prober = CollapseGuard(GuardConfig(max_new_tokens=args.probe_tokens, batch_size=4), probe_images=images,
                               probe_references=["x"] * len(images), processor=processor)  # fmt: skip
        start = clock()
        prober.generate(models["sts_guard"][0])
        probe_s = clock() - start
    med = {name: statistics.median(t) for name, t in rounds.items()}

    def paired(name: str) -> float:  # median over rounds of the arm's time / plain's time in the same round
        return statistics.median(a / b for a, b in zip(rounds[name], rounds["plain"], strict=True))

    ratio = paired("sts_guard")
    with_probes = ratio + probe_s / args.probe_every / med["plain"]
    print(json.dumps({
        "overhead_ratio": round(ratio, 4),
        "overhead_ratio_sts": round(paired("sts"), 4),
        "overhead_ratio_with_probes": round(with_probes, 4),
        "step_s": {k: round(v, 5) for k, v in med.items()},
        "probe_s": round(probe_s, 3), "probe_every": args.probe_every, "grad_every": args.grad_every,
        "steps_per_arm": args.steps * args.rounds, "batch": args.batch, "threads": args.threads, "clock": args.clock,
        "target": 1.05, "meets_target": ratio <= 1.05,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
