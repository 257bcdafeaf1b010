"""Run one HIKARI recipe under a multi-process launcher and dump this rank's trainable parameters.

Used by test_multiprocess.py (not collected by pytest: no `test_` prefix):

    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2
        tests/training/ddp_worker.py RECIPE DUMP_DIR --set k=v ...   (one command line)

Every rank writes `DUMP_DIR/rank<r>.safetensors` with its LoRA tensors after training, so the test can check
that the data-parallel replicas ended identical (only rank 0 saves the run's adapter).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("recipe")
    parser.add_argument("dump_dir", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)

    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    from hikari.config import load_config, resolve_recipe
    from hikari.training import stages

    captured: dict[str, torch.nn.Module] = {}
    prepare = stages.prepare_model

    def capturing_prepare(config, output_dir):  # type: ignore[no-untyped-def]
        model, processor, base = prepare(config, output_dir)
        captured["model"] = model
        return model, processor, base

    stages.prepare_model = capturing_prepare
    config = load_config(resolve_recipe(args.recipe), args.overrides)
    stages.run_training(config, evaluate=False)

    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    model = captured["model"]
    tensors = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    args.dump_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.dump_dir / f"rank{rank}.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
