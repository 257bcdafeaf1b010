"""Training-step overhead of Selective Token Supervision + the LoRA penalty on the tiny model, vs plain training.

Both arms run in this process on the same batches (synthetic SkinCAP captions, the tiny Qwen3-VL with LoRA):
collate (STS weights are computed there) + forward + backward + optimizer step. The arms alternate in rounds so
machine noise hits both alike; the median step time of each arm is compared. Prints one JSON object:
`overhead_ratio` = median(STS + ibr_delta step) / median(plain step); target ≤ 1.05.

Run: `python benchmarks/train_step.py [--steps 40 --rounds 3 --batch 8]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per arm and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hikari.data.skincap import read_skincap
    from hikari.data.synth import write_synthetic_skincap
    from hikari.models.load import load_model, load_processor
    from hikari.models.lora import add_lora
    from hikari.models.tiny import build_tiny_qwen3vl
    from hikari.training.data import SupervisedVLMDataset, VLMCollator, build_examples
    from hikari.training.losses import lora_penalty
    from hikari.training.sts import STSConfig
    from hikari.training.trainer import answer_token_loss

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
            "sts": (VLMCollator(processor, sts=STSConfig(reason_mode="span", normalize="mean")), "ibr_delta"),
        }
        models = {}
        for name in arms:
            model = add_lora(load_model(str(model_dir), dtype="fp32"), r=16, alpha=16, dropout=0.0, target="both")
            models[name] = (model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4))

        def step(name: str, i: int) -> float:
            collator, penalty = arms[name]
            model, optimizer = models[name]
            start = time.perf_counter()
            chunk = [items[(i * args.batch + j) % len(items)] for j in range(args.batch)]
            batch = collator(chunk)
            loss, _ = answer_token_loss(model, batch, None)
            if penalty != "none":
                loss = loss + lora_penalty(model, penalty, beta=0.01)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        for name in arms:  # warm-up
            for i in range(3):
                step(name, i)
        times: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.rounds):
            for name in arms:
                times[name] += [step(name, i) for i in range(args.steps)]
    med = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "overhead_ratio": round(med["sts"] / med["plain"], 4),
        "median_step_s": {k: round(v, 5) for k, v in med.items()},
        "steps_per_arm": len(times["plain"]), "batch": args.batch, "threads": args.threads,
        "target": 1.05, "meets_target": med["sts"] / med["plain"] <= 1.05,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
