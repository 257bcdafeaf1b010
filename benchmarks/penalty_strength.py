"""The LoRA penalty's relative strength (`hikari.training.strength`) of the published Antares settings at
Qwen3-VL-8B width, on a CPU — the reference the demo derives its "8B-equivalent" β from.

Model: `Qwen3VLForConditionalGeneration` from the published Qwen3-VL-8B configuration with random weights and only
the depth reduced (`--text-layers`, `--vision-blocks`; see benchmarks/real_shape.py), the real image processor and
672-px synthetic SkinCAP pictures. Procedure (`measure_from_base`, the same the demo runs on its tiny model): Stage 1
and Stage 2 (merged-init) one step each from the random base, then `--steps` optimizer steps of `antares` with its
shipped settings — NF4 4-bit base, adamw_8bit, gradient checkpointing, bf16, LoRA r 16 on both towers, lr 2e-4 with 5
warm-up steps, batch 2 × accumulation 4, STS + ibr_ab β 0.01 — and the learning-rate schedule of a
`--schedule-steps`-step run (SkinCAP's ~2,900 training images × 3 epochs / 8 per step ≈ 1,100).

Why the ratio transfers from 2 decoder layers to 36: r_e = |∇penalty_e| / RMS(∇CE_e) is per element. Its numerator
is β·|A_e|, set by PEFT's initialisation of A (uniform in ±1/√in_features: the width, not the depth). Its
denominator, the CE gradient at one adapted module, is the upstream gradient times the module's input, both of
which pre-norm residual blocks (RMSNorm before every attention and MLP) keep at a size that does not grow or shrink
with the number of blocks. What depth does not capture — and a random-weight model cannot — is a pretrained model's
lower loss; the demo measures its tiny model the same way (random base), so the comparison is like with like.

Prints one JSON line (the `PenaltyStrength`) on stdout; `--write` also saves it as the shipped reference
`src/hikari/recipes/reference_strength/antares.json`. About 8 minutes and 11 GB of RAM on 2 cores. On a GPU machine
with the hub, `--base Qwen/Qwen3-VL-8B-Thinking --data data/SkinCAP --split runs/split.json` measures the real,
pretrained model on the real data (not run here: no GPU, no hub).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_shape import synthetic_inputs, width_true_model  # noqa: E402

from hikari.models import qwen3vl_8b as Q8B  # noqa: E402
from hikari.training.strength import STRENGTH_STEPS, measure_from_base, reference_strength_path  # noqa: E402
from hikari.utils.io import atomic_write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--text-layers", type=int, default=2)
    ap.add_argument("--vision-blocks", type=int, default=3)
    ap.add_argument("--steps", type=int, default=STRENGTH_STEPS)
    ap.add_argument("--schedule-steps", type=int, default=1100)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--write", action="store_true", help="save as the shipped reference for the antares recipe")
    ap.add_argument("--base", default=None, help="a real base instead of the width-true random model (hub id or "
                    "directory, e.g. Qwen/Qwen3-VL-8B-Thinking on a GPU machine)")
    ap.add_argument("--data", type=Path, default=None, help="a SkinCAP folder instead of the synthetic one")
    ap.add_argument("--split", type=Path, default=None, help="its split JSON (with --data)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stdout = sys.stdout
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="hikari-strength-")) if temporary else args.work
    work.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            if (args.data is None) != (args.split is None):
                ap.error("--data and --split go together")
            data, split = (args.data, args.split) if args.data else synthetic_inputs(work)
            base = args.base or width_true_model(work, args.text_layers, args.vision_blocks)
            model = args.base or "Qwen3-VL-8B width, random weights"
            shape = {"model": model, "hidden_size": Q8B.TEXT["hidden_size"],
                     "vision_hidden_size": Q8B.VISION["hidden_size"], "text_layers": args.text_layers,
                     "vision_blocks": args.vision_blocks, "lr_schedule_steps": args.schedule_steps,
                     "settings": "shipped antares recipe (4-bit NF4, adamw_8bit, checkpointing, bf16, batch 2x4)",
                     "command": "python benchmarks/penalty_strength.py --write"}  # fmt: skip
            result = measure_from_base(base, data, split, work / "runs", steps=args.steps,
                                       schedule_steps=args.schedule_steps, **shape)  # fmt: skip
        row = {**result.to_dict(), "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(row), file=stdout, flush=True)
        if args.write:
            atomic_write_json(reference_strength_path("antares"), row)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
