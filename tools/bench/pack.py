"""``scripts/bench.py pack``: what packing runs on one GPU buys (``study.sh --per-gpu N``).

As many processes as the largest N of ``--runs`` (default 1,2,4) are started once, as the study
starts its runs, each pinned to the same GPU with ``CUDA_VISIBLE_DEVICES``; each builds the full
trainer step of ``bench.py train`` (b) on random images and warms up. Then, for each N, N of
them train together for ``--seconds`` while the others wait (idle: no computation). Printed:
images/s per run and in total, the total relative to one run alone (what a study of many runs
gains in throughput) and the peak memory per run.

Example::

    python scripts/bench.py pack --device cuda --runs 1,2,4,8 --seconds 30      # ResNet-50, 256x128
    python scripts/bench.py pack --device cpu --model resnet18 --size 32x16 --batch 4 --runs 1,2 --seconds 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from reid.cli import parse_int_list
from reid.errors import ReidError
from . import train as train_bench
from .timing import sync

REPO = Path(__file__).resolve().parents[2]
TAG = "PACK "  # protocol lines between the parent and its workers start with this


def add_arguments(p: argparse.ArgumentParser) -> None:
    train_bench.add_arguments(p)
    p.add_argument("--runs", default="1,2,4", help="numbers of runs packed at once to measure (default 1,2,4)")
    p.add_argument("--seconds", type=float, default=30.0, help="timed training per measurement (default 30)")
    p.add_argument("--gpu", default=None, help="GPU to pack on (default: the first visible one)")


def run(args: argparse.Namespace) -> dict:
    counts = sorted(set(parse_int_list(args.runs, "--runs", minimum=1)) | {1})  # 1 run alone is the reference
    device = train_bench.resolve_device(args.device)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if device.type == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = args.gpu or os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    worker_args = {k: v for k, v in vars(args).items() if k not in ("runs", "gpu", "suite", "debug")}
    # started once (each start costs seconds of imports, model building and warm-up), released n at a time
    cmd = [sys.executable, "-m", "tools.bench.pack", json.dumps(worker_args)]
    workers = [subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(counts[-1])]
    try:
        for w in workers:
            _expect(w, "ready", "while warming up")
        rows = [packed_speed(workers[:n]) for n in counts]
    except BaseException:
        for w in workers:
            w.kill()
        raise
    finally:
        for w in workers:
            if w.stdin and not w.stdin.closed:
                w.stdin.close()  # end of input: the worker exits
            w.wait()
    alone = rows[0]["total_images_per_s"] / rows[0]["runs"]
    for row in rows:
        row["total_vs_one_run"] = row["total_images_per_s"] / alone
    result = {**rows[0]["describe"], "gpu": env.get("CUDA_VISIBLE_DEVICES"), "seconds": args.seconds,
              "rows": [{k: v for k, v in r.items() if k != "describe"} for r in rows]}
    print_table(result)
    return result


def packed_speed(workers: list[subprocess.Popen]) -> dict:
    """Release ``workers`` together (all warm), collect their images/s."""
    n = len(workers)
    for w in workers:
        w.stdin.write("go\n")
        w.stdin.flush()
    reports = [json.loads(_expect(w, "{", f"in the {n}-run measurement")) for w in workers]
    per_run = [r["images"] / r["seconds"] for r in reports]
    return {"runs": n, "images_per_s_per_run": sum(per_run) / n, "total_images_per_s": sum(per_run),
            "peak_memory_mib_per_run": max(r["peak_memory_mib"] for r in reports),
            "describe": reports[0]["describe"]}


def _expect(worker: subprocess.Popen, start: str, during: str) -> str:
    """The worker's next protocol line starting with ``start`` (its other output is passed through)."""
    for line in worker.stdout:
        if line.startswith(TAG + start):
            return line[len(TAG):]
        sys.stdout.write(line)
    raise ReidError(f"pack benchmark: a worker stopped {during} (exit code {worker.wait()}); see its output "
                    "above (out of memory? then lower --runs or --batch)")


def worker(options: dict) -> None:
    """One packed run: warm up, say ready; at each ``go`` train for ``seconds`` and report images and seconds;
    exit at the end of input."""
    args = argparse.Namespace(**options)
    s = train_bench.settings(args)
    n = s.batch * max(s.steps, s.warmup)
    trainer = train_bench.bench_trainer(s.cfg, s.device, train_bench.random_labels(n, args.classes),
                                        num_classes=args.classes)
    trainer.sampler = train_bench.FixedBatches(n, s.batch, s.warmup)
    trainer.train_epoch(epoch=1, first_step=0)
    sync(s.device)
    print(TAG + "ready", flush=True)
    trainer.sampler = train_bench.FixedBatches(n, s.batch, s.steps)
    epoch = 2
    while sys.stdin.readline().strip() == "go":
        start, images = time.perf_counter(), 0
        while time.perf_counter() - start < args.seconds:
            trainer.train_epoch(epoch=epoch, first_step=0)
            sync(s.device)
            images += s.batch * s.steps
            epoch += 1
        seconds = time.perf_counter() - start
        print(TAG + json.dumps({"images": images, "seconds": seconds, "describe": s.describe,
                                "peak_memory_mib": train_bench.peak_memory_mib(s.device)}), flush=True)


def print_table(r: dict) -> None:
    where = f" (CUDA_VISIBLE_DEVICES={r['gpu']})" if r["gpu"] is not None else ""
    print(f"pack benchmark on {r['device']}{where}: {r['model']}, batch {r['batch']}, "
          f"{r['size']}, {r['precision']}; each run is its own process, {r['seconds']:g} s timed together")
    print(f"| {'runs at once':>12} | {'images/s per run':>16} | {'images/s total':>14} | {'total vs 1 run':>14} "
          f"| {'peak MiB per run':>16} |")
    print(f"|{'-' * 14}|{'-' * 18}|{'-' * 16}|{'-' * 16}|{'-' * 18}|")
    for row in r["rows"]:
        print(f"| {row['runs']:>12} | {row['images_per_s_per_run']:>16.1f} | {row['total_images_per_s']:>14.1f} | "
              f"{row['total_vs_one_run']:>13.2f}x | {row['peak_memory_mib_per_run']:>16.0f} |")
    print("A study of many runs finishes about 'total vs 1 run' times sooner packed like this than one run at a time.")


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
