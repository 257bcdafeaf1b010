"""`hikari serve` under load: requests/s and p50/p95 latency of POST /v1/cascade at concurrency 1, 4 and 16,
against the same cascade called in-process in the same run, and the gain of dynamic batching at concurrency 16
(the server with --max-batch N against --max-batch 1). It prints one JSON line:

    make demo && python benchmarks/serve.py                 # the demo's models (subaru, sirius + index, vega)
    python benchmarks/serve.py --requests 16 --concurrency 1,4

The in-process baseline runs exactly what the server's worker runs for one request — decode the upload, then
`HikariService.cascade` — on the same models, loaded the same way, in this process; it is closed before the server
starts, so the two never share the CPU. The server is a real `hikari serve` subprocess on a free localhost port,
driven by httpx over HTTP. Greedy decoding and the same pictures make both do the same work.

Targets: overhead_ratio_c1 (server p50 / in-process p50 at concurrency 1) ≤ 1.15; batching_gain_c16
(requests/s with --max-batch N / with --max-batch 1, both at concurrency 16) reported, > 1 where batching pays.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hikari.cli.serve import DEMO_RUNS  # noqa: E402
from hikari.config import ServeConfig, default  # noqa: E402
from hikari.data.images import decode_image  # noqa: E402
from hikari.data.split import load_split  # noqa: E402
from hikari.serve.process import ServerProcess  # noqa: E402
from hikari.serve.service import CascadeRequest, HikariService  # noqa: E402

TARGETS = {"overhead_ratio_c1": 1.15}


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"n": len(ordered), "req_per_s": round(len(ordered) / wall, 3),
            "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p95_ms": round(1000 * ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
            "mean_ms": round(1000 * statistics.fmean(ordered), 1)}  # fmt: skip


def in_process(models: dict[str, Any], pictures: list[tuple[str, bytes]], n: int, fields: dict[str, Any]) -> dict:
    service = HikariService.load(stage1=models["stage1"], stage2=models["stage2"], stage3=[(None, models["stage3"])],
                                 index=models["index"], dtype=models["dtype"], device="cpu",
                                 stage2_prompt=models["stage2_prompt"],
                                 reference_text=models["reference_text"])  # fmt: skip
    max_pixels = default(ServeConfig, "max_pixels")

    def one(i: int) -> float:
        name, data = pictures[i % len(pictures)]
        start = time.perf_counter()
        image = decode_image(data, max_pixels=max_pixels, max_size=service.image_max_size, name=name)
        service.cascade([CascadeRequest(image, name, None, fields["k"], (service.stage3[0],),
                                        fields["max_new_tokens"], True)])  # fmt: skip
        return time.perf_counter() - start

    try:
        for i in range(3):
            one(i)
        start = time.perf_counter()
        latencies = [one(i) for i in range(n)]
        return summary(latencies, time.perf_counter() - start)
    finally:
        service.close()


def over_http(url: str, pictures: list[tuple[str, bytes]], n: int, concurrency: int, fields: dict[str, Any]) -> dict:
    form = {"k": str(fields["k"]), "max_new_tokens": str(fields["max_new_tokens"])}
    with httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:

        def one(i: int) -> float:
            name, data = pictures[i % len(pictures)]
            start = time.perf_counter()
            response = client.post("/v1/cascade", files={"image": (name, data, "image/png")}, data=form)
            if response.status_code != 200:
                raise RuntimeError(f"{name}: HTTP {response.status_code}: {response.text[:300]}")
            return time.perf_counter() - start

        for i in range(3):
            one(i)
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(one, range(n)))
        return summary(latencies, time.perf_counter() - start)


def serve_args(models: dict[str, Any], max_batch: int, queue_size: int) -> list[str]:
    return ["--stage1", str(models["stage1"]), "--stage2", str(models["stage2"]), "--stage3", str(models["stage3"]),
            "--index", str(models["index"]), "--dtype", models["dtype"], "--device", "cpu",
            "--stage2-prompt", models["stage2_prompt"], "--reference-text", models["reference_text"],
            "--max-batch", str(max_batch), "--queue-size", str(queue_size)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--stage1", help="default: the demo's subaru")
    parser.add_argument("--stage2", help="default: the demo's sirius (trained with references)")
    parser.add_argument("--stage3", help="default: the demo's vega")
    parser.add_argument("--index", help="default: the demo's reference index")
    parser.add_argument("--images", type=Path, help="a folder of PNGs; default: the demo split's validation part")
    parser.add_argument("--stage2-prompt", default=None, help="default: T0 for the demo's models, else P0")
    parser.add_argument("--reference-text", default=None, help="default: label for the demo's models")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--requests", type=int, default=48, help="timed requests per concurrency level")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--max-batch", type=int, default=default(ServeConfig, "max_batch"))
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32, help="the caption budget of every request")
    args = parser.parse_args()

    demo = not (args.stage1 and args.stage2 and args.stage3)
    if demo and not (args.demo_dir / DEMO_RUNS["stage1"]).exists():
        sys.exit(f"{args.demo_dir} has no demo runs: run `make demo` first, or give --stage1/--stage2/--stage3")
    models = {
        "stage1": args.stage1 or args.demo_dir / DEMO_RUNS["stage1"],
        "stage2": args.stage2 or args.demo_dir / DEMO_RUNS["stage2"],
        "stage3": args.stage3 or args.demo_dir / DEMO_RUNS["stage3"][0],
        "index": args.index or args.demo_dir / DEMO_RUNS["index"],
        "dtype": args.dtype,
        "stage2_prompt": args.stage2_prompt or ("T0" if demo else "P0"),
        "reference_text": args.reference_text or ("label" if demo else "label_description"),
    }  # fmt: skip
    if args.images is not None:
        paths = sorted(args.images.glob("*.png"))[:32]
    else:
        split = load_split(args.demo_dir / "split.json")
        paths = [args.demo_dir / "data/skincap" / name for name in split.parts["val"][:32]]
    pictures = [(p.name, p.read_bytes()) for p in paths]
    levels = [int(c) for c in args.concurrency.split(",")]
    fields = {"k": args.k, "max_new_tokens": args.max_new_tokens}
    started = time.perf_counter()

    baseline = in_process(models, pictures, args.requests, fields)
    queue = max(levels) * 2
    server: dict[str, Any] = {}
    with ServerProcess(serve_args(models, args.max_batch, queue)) as proc:
        for c in levels:
            server[f"c{c}"] = over_http(proc.url, pictures, args.requests, c, fields)
    unbatched = None
    if args.max_batch > 1:
        with ServerProcess(serve_args(models, 1, queue)) as proc:
            unbatched = over_http(proc.url, pictures, args.requests, max(levels), fields)

    top = f"c{max(levels)}"
    result = {
        "benchmark": "serve", "device": "cpu", "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "requests_per_level": args.requests, "k": args.k,
        "max_new_tokens": args.max_new_tokens, "max_batch": args.max_batch, "pictures": len(pictures),
        "in_process": baseline, "server": server,
        f"server_max_batch_1_{top}": unbatched,
        "overhead_ratio_c1": round(server["c1"]["p50_ms"] / baseline["p50_ms"], 3) if "c1" in server else None,
        "overhead_ratio_c1_mean": round(server["c1"]["mean_ms"] / baseline["mean_ms"], 3) if "c1" in server else None,
        f"batching_gain_{top}": (round(server[top]["req_per_s"] / unbatched["req_per_s"], 3)
                                 if unbatched else None),
        "targets": TARGETS, "total_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    result["meets_targets"] = result["overhead_ratio_c1"] is not None and (
        result["overhead_ratio_c1"] <= TARGETS["overhead_ratio_c1"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
