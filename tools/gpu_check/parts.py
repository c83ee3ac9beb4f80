"""The eight parts of the GPU check (README "The GPU check" says what each reports), each run in a
process of its own by __main__.py. A step of a part that raises is recorded with its error line and
the part goes on; the part's result (``WORK/parts/<name>.json``) is rewritten after every step and
table, so a part killed at its limit keeps what finished."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from reid.config import load_config
from reid.data.synthetic import ensure_synthetic
from reid.engine.device import configure_backends
from reid.engine.run import train
from reid.errors import ReidError
from reid.io import atomic_write_bytes, atomic_write_text
from reid.machine import cpu_model_and_flags, machine_kind, machine_record

from ..bench import train as bench
from ..bench.timing import timed

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
# What decides how long each kind of check takes.
SCALES = {
    "full": SimpleNamespace(
        bench=["--batch", "64", "--size", "256x128", "--precision", "bf16"], compile=True,
        epoch_images=12936, epoch_ids=751,  # Market-1501's train split
        matmul=8192, train=[],
        synthetic={"ids": 100, "images_per_id": 40, "cameras": 6, "distractors": 20, "junk": 10, "seed": 0},
        bot_epochs=3, pair_epochs=2, det_epochs=3, det_every_steps=30, note=None,
        profile_steps=30, graph_steps=50, pack_runs="1,2,4", pack_seconds=6),
    "tiny": SimpleNamespace(  # 2 or 3 steps an epoch: a kill after step 1 is mid-epoch; 1 epoch per run
        bench=["--batch", "8", "--size", "32x16", "--model", "resnet18", "--steps", "1", "--warmup", "1"],
        compile=False, epoch_images=8, epoch_ids=2, matmul=256,
        train=["data.size=[32,16]", "model.name=resnet18", "train.batch_size=8", "eval.batch_size=64"],
        synthetic={"ids": 4, "images_per_id": 6, "cameras": 6, "distractors": 2, "junk": 1, "seed": 0},
        bot_epochs=1, pair_epochs=1, det_epochs=1, det_every_steps=1,
        profile_steps=3, graph_steps=50, pack_runs="1,2", pack_seconds=0.5,
        note="--tiny: synthetic data, ResNet-18 at 32x16, 1 epoch per run; the figures test the check, "
             "not the hardware"),
}


class StepError(Exception):
    """A failure whose message is the line to report."""


class Part:
    """One part's settings and result; the result is saved after every change."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.args, self.device, self.scale = args, args.device, SCALES[args.scale]
        self.runs, self.path = args.work / "runs", args.work / "parts" / f"{name}.json"
        self.result: dict[str, Any] = {"tables": [], "notes": [], "pngs": [], "facts": {}, "errors": []}

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        print(f"== {label} ({time.strftime('%H:%M:%S')})", flush=True)
        try:
            yield
        except Exception as e:  # noqa: BLE001 - a failed step is reported; the part goes on
            traceback.print_exc()
            text = str(e) if isinstance(e, (StepError, ReidError)) else f"{type(e).__name__}: {e}"
            self.result["errors"].append(f"{label}: {(text.strip() or type(e).__name__).splitlines()[0]}")
        self.save()

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Add the table ``title``, or replace the one of that title (a table that grows row by row)."""
        table = {"title": title, "columns": columns, "rows": [[str(c) for c in r] for r in rows]}
        titles = [t["title"] for t in self.result["tables"]]
        at = titles.index(title) if title in titles else len(titles)
        self.result["tables"][at:at + 1] = [table]
        self.save()

    def note(self, text: str) -> None:
        self.result["notes"].append(text)
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.result, indent=2, default=str) + "\n")

    def config(self, file: str, *sets: str):
        """``configs/<file>`` from scratch at this scale's sizes, with ``sets`` (``--set`` items)."""
        return load_config(CONFIGS / file, ["model.pretrained=none", "seed=0", "eval.every_epochs=0",
                                            *self.scale.train, *sets])

    def train(self, file: str, name: str, *sets: str) -> dict:
        """Train ``configs/<file>`` on the check's data into WORK/runs/<name> (in this process); its results.json."""
        a = self.args
        data = a.market_root if a.market_root and not a.tiny else ensure_synthetic(a.work / "synthetic",
                                                                                    **self.scale.synthetic)
        cfg = self.config(file, f"data.root={data}", f"data.cache_dir={a.work / 'cache'}",
                          f"output.root={self.runs}", f"output.name={name}", *sets)
        train(cfg, device=self.device, resume="auto", progress=False)
        return json.loads((self.runs / name / "results.json").read_text())


def run_part(name: str, args: argparse.Namespace) -> int:
    part = Part(name, args)
    part.save()
    globals()[name](part)
    return 1 if part.result["errors"] else 0


# ----------------------------------------------------------------------------- 1. environment

def environment(part: Part) -> None:
    with part.step("machine"):
        if part.device == "cuda" and not torch.cuda.is_available():
            raise StepError(f"--device cuda: no CUDA device is visible to torch {torch.__version__} "
                            f"(built for CUDA {torch.version.cuda})")
        facts = {"card": f"CPU: {cpu_model_and_flags()[0]}", "driver": "none (CPU)"}
        if part.device == "cuda":
            props = torch.cuda.get_device_properties(0)
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20) if shutil.which("nvidia-smi") else None
            facts = {"card": props.name, "driver": smi.stdout.strip() if smi and smi.stdout.strip() else "unknown",
                     "compute_capability": f"{props.major}.{props.minor}",
                     "memory": f"{props.total_memory / 2**30:.1f} GiB", "multiprocessors": props.multi_processor_count}
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        facts.update(torch=torch.__version__, cuda_build=str(torch.version.cuda), cudnn=str(cudnn),
                     python=platform.python_version(), cpu_threads=torch.get_num_threads(),
                     machine=machine_kind(machine_record(torch.device(part.device))))  # what runs record
        part.result["facts"] = facts  # the report's header
        part.table("machine", ["what", "value"], [[k.replace("_", " "), v] for k, v in facts.items()])


# ----------------------------------------------------------------------------- 2. CUDA tests

def cuda_tests(part: Part) -> None:
    with part.step("pytest -m cuda"):
        import pytest

        if part.args.market_root:  # the tests that need the real images read it
            os.environ["REID_MARKET_ROOT"] = str(part.args.market_root)
        files = [str(p) for p in sorted((REPO / "tests").glob("test_*.py")) if "pytest.mark.cuda" in p.read_text()]
        outcomes = Outcomes()
        code = pytest.main(["-m", "cuda", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO), *files],
                           plugins=[outcomes])
        part.table("tests marked cuda", ["test", "outcome"], outcomes.rows)
        counts = {k: sum(o == k for _, o in outcomes.rows) for k in ("failed", "skipped")}
        if not outcomes.rows:
            raise StepError(f"no test marked @pytest.mark.cuda ran (pytest exit code {code})")
        if counts["failed"]:
            raise StepError(f"{counts['failed']} of {len(outcomes.rows)} CUDA tests failed (see the table)")
        if part.device == "cuda" and counts["skipped"]:
            raise StepError(f"{counts['skipped']} of {len(outcomes.rows)} CUDA tests skipped on a CUDA device")


class Outcomes:
    """A pytest plugin: ``(test, outcome)`` of each test (a failing set-up or tear-down counts as failed)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or report.outcome != "passed":
            outcome = "failed" if report.when == "teardown" and report.failed else report.outcome
            self.rows.append((report.nodeid, outcome))


# ----------------------------------------------------------------------------- 3. speed

def speed(part: Part) -> None:
    rows: list[list[str]] = []
    for compile_model in (False, True) if part.scale.compile else (False,):
        with part.step(f"bench.py train{' --compile' if compile_model else ''}"):
            parser = argparse.ArgumentParser()
            bench.add_arguments(parser)
            r = bench.run(parser.parse_args(["--device", part.device, *part.scale.bench,
                                             *(["--compile"] if compile_model else [])]))
            rows.append([r["compile"], r["model"], r["batch"], r["size"], r["precision"],
                         f"{r['bare_images_per_s']:.1f}", f"{r['trainer_images_per_s']:.1f}", f"{r['ratio']:.3f}",
                         f"{r['bare_peak_memory_mib']:.0f}", f"{r['trainer_peak_memory_mib']:.0f}"])
            part.table("scripts/bench.py train", ["torch.compile", "model", "batch", "size", "precision",
                                                  "bare images/s", "trainer images/s", "trainer / bare",
                                                  "bare peak MiB", "trainer peak MiB"], rows)
        if not compile_model:
            with part.step("full-size epoch"):
                epoch_against_floor(part)
    if not part.scale.compile:
        part.note("bench.py train --compile: not run with --tiny (compiling takes minutes on a CPU)")


def epoch_against_floor(part: Part) -> None:
    device, s = torch.device(part.device), part.scale
    cfg = part.config("bot.yaml", "data.val_per_id=0")
    configure_backends(cfg.train.deterministic, cfg.train.tf32)  # as train() does
    seconds, images, flops = timed_epochs_and_flops(cfg, device, s)  # the trainer's memory is freed on return
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_tflops(device, s.matmul, dtype)
    floor = images * flops / (peak * 1e12)
    m = cfg.model
    part.table(f"one epoch of the BoT config ({m.name}, last stride {m.last_stride}, {m.neck}, P x K = "
               f"{cfg.train.batch_size // cfg.sampler.num_instances} x {cfg.sampler.num_instances}, "
               f"{cfg.data.size[0]}x{cfg.data.size[1]}) on {images:,} random images",
               ["epoch 1 s (autotune)", "epoch 2 s", "images/s", "training GFLOP/image",
                f"{s.matmul}^3 {str(dtype)[6:]} matmul TFLOP/s", "floor s", "epoch 2 / floor"],
               [[f"{seconds[0]:.2f}", f"{seconds[1]:.2f}", f"{images / seconds[1]:.1f}", f"{flops / 1e9:.2f}",
                 f"{peak:.1f}", f"{floor:.2f}", f"{seconds[1] / floor:.1f}"]])
    part.note("floor: images x FLOPs per image of a training step (forward, criterion, backward; FlopCounterMode) "
              "/ the measured matmul peak; the PK sampler trains whole chunks of 4 images per identity")


def timed_epochs_and_flops(cfg, device: torch.device, s) -> tuple[list[float], int, float]:
    """Seconds of epochs 1 and 2 of the benchmark trainer, images per epoch, FLOPs per image of one step."""
    trainer = bench.bench_trainer(cfg, device, torch.as_tensor(np.sort(np.arange(s.epoch_images) % s.epoch_ids)))
    seconds = [timed(lambda e=e: trainer.train_epoch(epoch=e, first_step=0), device=device)[0][0] for e in (1, 2)]
    images = sum(len(b) for b in trainer.sampler.batches(2))
    batch, labels = trainer.train_batch(trainer.sampler.batches(2)[0], 2, 0)
    flops = count_flops(lambda: trainer.train_step(batch, labels)) / len(labels)  # the optimiser step: no matmuls
    return seconds, images, flops


def count_flops(fn) -> int:
    """Floating-point operations ``fn`` performs (matmuls and convolutions, as FlopCounterMode counts them)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype, repeats: int = 20) -> float:
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    c = torch.empty_like(a)
    (seconds,), _ = timed(lambda: [torch.mm(a, b, out=c) for _ in range(repeats)], warmup=1, device=device)
    return 2 * n ** 3 * repeats / seconds / 1e12


# ----------------------------------------------------------------------------- 4. real images

def real_images(part: Part) -> None:
    if part.args.market_root is None and not part.args.tiny:
        part.result["errors"].append("data: no --market-root given; pass the folder holding bounding_box_train/, "
                                     "query/ and bounding_box_test/ (the Market-1501 mini set)")
        return part.save()
    from scipy.io import loadmat

    if part.scale.note:
        part.note(part.scale.note)
    rows: list[list[str]] = []

    def run(name: str, config: str, precision: str, seed: int, *sets: str) -> float:
        """Train the run, add its row to the table; its mAP in points."""
        r = part.train(config, name, f"seed={seed}", *sets)
        steps = loadmat(part.runs / name / "mini_batch_data.mat")["train_loss"].shape[1]
        epochs = epoch_seconds(part.runs / name)
        rows.append([name, config, precision, seed, len(epochs), steps,
                     f"{np.mean(list(epochs.values())):.1f}", f"{100 * r['rank1']:.1f}%", f"{100 * r['mAP']:.2f}%"])
        part.table("trained from scratch", ["run", "config", "precision", "seed", "epochs", "steps", "s / epoch",
                                            "rank-1", "mAP"], rows)
        return 100 * r["mAP"]

    m: dict[str, float] = {}
    low = "bf16"
    if part.args.device == "cpu":  # the rehearsal must not depend on the CPU's bf16 kernels (reid/engine/cpu_bf16.py)
        low = "fp32"
        part.note("on the CPU the bf16 runs train in fp32 (fp32 vs fp32 over two seeds): CPU bf16 kernels are "
                  "wrong or unrepeatable on some CPUs, and a CPU bf16 run trains only after its self-test")
    for name, precision, seed in (("bot_bf16", low, 0), ("bot_bf16_seed1", low, 1), ("bot_fp32", "fp32", 0)):
        with part.step(name):
            # warm-up off: BoT's 10 warm-up epochs start at lr x 0.01, where bf16 and fp32 cannot differ yet
            m[name] = run(name, "bot.yaml", precision, seed, f"train.precision={precision}", "train.tf32=false",
                          f"train.epochs={part.scale.bot_epochs}", "schedule.warmup_epochs=0")
    with part.step("bf16 vs fp32"):
        part.table(f"bot.yaml, warm-up off, {part.scale.bot_epochs} epochs: final mAP difference in points",
                   ["bf16 - fp32 (seed 0)", "run-to-run noise: bf16 seed 0 - seed 1"],
                   [[f"{m['bot_bf16'] - m['bot_fp32']:+.2f}", f"{m['bot_bf16'] - m['bot_bf16_seed1']:+.2f}"]])
    with part.step("standard vs soft"):
        for name in ("standard", "soft"):
            run(name, f"{name}.yaml", "auto", 0, f"train.epochs={part.scale.pair_epochs}")
        from reid.analysis import compare

        png, _ = compare([part.runs / "standard", part.runs / "soft"], out=part.runs / "standard_vs_soft.png")
        atomic_write_bytes(part.args.out / "standard_vs_soft.png", Path(png).read_bytes())
        part.result["pngs"].append("standard_vs_soft.png")


def epoch_seconds(run_dir: Path) -> dict[int, float]:
    """``{epoch: seconds}`` from the run's log.txt epoch lines."""
    lines = (run_dir / "log.txt").read_text().splitlines()
    return {int(m[1]): float(m[2]) for m in (re.match(r"^epoch (\d+)/\d+ .*\btime ([0-9.]+)s", ln) for ln in lines)
            if m}


# ----------------------------------------------------------------------------- 5. determinism

def determinism(part: Part) -> None:
    sets = [f"train.epochs={part.scale.det_epochs}", "train.deterministic=true"]
    killed = [*sets, f"checkpoint.every_steps={part.scale.det_every_steps}"]
    with part.step("killed and resumed"):
        killed_at = kill_after_first_checkpoint(part, killed)  # forked first: this process has not started CUDA
        part.train("bot_center.yaml", "det_reference", *sets)
        part.train("bot_center.yaml", "det_killed", *killed)
        a, b = (torch.load(part.runs / n / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]
                for n in ("det_reference", "det_killed"))
        differ = different_tensors(a, b)
        part.table("SIGKILL mid-epoch, then --resume auto", ["killed at", "tensors", "identical (torch.equal)"],
                   [[killed_at, len(a), len(a) - len(differ)]])
        if differ:
            raise StepError(f"{len(differ)} of {len(a)} weight tensors differ from the uninterrupted run "
                            f"(first: {differ[0]})")
    with part.step("speed of the mode"):
        part.train("bot_center.yaml", "det_off", f"train.epochs={part.scale.det_epochs}", "train.deterministic=false")
        timed = min(2, part.scale.det_epochs)  # epoch 1 includes cuDNN's autotuning (--tiny has only epoch 1)
        on, off = (epoch_seconds(part.runs / n)[timed] for n in ("det_reference", "det_off"))
        part.table(f"train.deterministic: epoch {timed} (no step checkpoints in either run)",
                   ["deterministic", "seconds"], [["true", f"{on:.2f}"], ["false", f"{off:.2f}"]])
        part.note(f"the deterministic mode costs {100 * (on / off - 1):+.0f}% epoch time")


def different_tensors(a: dict, b: dict) -> list[str]:
    """Keys whose tensors are not ``torch.equal`` (a key missing on one side counts as different)."""
    return [k for k in sorted(set(a) | set(b)) if k not in a or k not in b or not torch.equal(a[k], b[k])]


def kill_after_first_checkpoint(part: Part, sets: list[str]) -> str:
    """Train the run det_killed in a forked process, SIGKILLed once its first step checkpoint is in place."""
    last = part.runs / "det_killed" / "checkpoints" / "last.pt"
    pid = os.fork()
    if pid == 0:
        try:
            part.train("bot_center.yaml", "det_killed", *sets)
        except BaseException:  # noqa: BLE001 - into the part's log; the child never returns
            traceback.print_exc()
        finally:
            os._exit(1)  # it was meant to be killed before the end
    done, status = 0, 0
    while not last.exists() and not done:
        done, status = os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)
    if not done:
        os.kill(pid, signal.SIGKILL)
        status = os.waitpid(pid, 0)[1]
    code = os.waitstatus_to_exitcode(status)
    if code != -signal.SIGKILL:
        raise StepError(f"the run ended (exit code {code}) before its first step checkpoint")
    state = torch.load(last, map_location="cpu", weights_only=True)
    if state["epoch_done"]:
        raise StepError(f"the kill came after epoch {state['epoch']} ended, not mid-epoch; checkpoint more often")
    return f"epoch {state['epoch']}, step {state['step']}"


# ----------------------------------------------------------------------------- 6. profile

RECIPES = (("BoT", "bot.yaml"), ("classic", "standard.yaml"))
PHASES = ("batch + augmentation", "forward", "criterion", "backward", "optimiser", "records")


def profile(part: Part) -> None:
    """Per recipe, over a few dozen steps after warm-up: wall time per step (unprofiled), then under
    torch.profiler the GPU-busy time (sum of kernel times) and kernels per step, and the host time of each
    phase of the step. Wall time near GPU-busy time: the GPU is kept busy; far above: the run waits on the host."""
    device, s = torch.device(part.device), part.scale
    rows = []
    for recipe, file in RECIPES:
        with part.step(f"profile {recipe}"):
            cfg = part.config(file, "data.val_per_id=0")
            configure_backends(cfg.train.deterministic, cfg.train.tf32)
            r = profile_recipe(cfg, device, s.profile_steps)
            cuda = device.type == "cuda"
            rows.append([recipe, file, cfg.train.batch_size, f"{r['wall_ms']:.2f}",
                         f"{r['busy_ms']:.2f}" if cuda else "n/a (CPU)", f"{r['kernels']:.0f}" if cuda else "n/a (CPU)",
                         f"{r['wall_ms'] / r['busy_ms']:.2f}" if cuda and r["busy_ms"] else "n/a",
                         *(f"{r['host_ms'][p]:.2f}" for p in PHASES)])
            part.table(f"a training step, {s.profile_steps} steps after warm-up (ms per step)",
                       ["recipe", "config", "batch", "wall", "GPU busy (kernels)", "kernels", "wall / busy",
                        *(f"host: {p}" for p in PHASES)], rows)
    part.note("wall / busy near 1: the GPU is kept busy; well above 1 (target: at most 1.3): the step waits on the "
              "host, which train.cuda_graphs (one launch per step) and packed runs (--per-gpu) address")


def profile_recipe(cfg, device: torch.device, steps: int) -> dict:
    """Wall ms per step of ``steps`` steps (unprofiled), then the same steps profiled: kernel ms and count per
    step (CUDA) and host ms per phase per step."""
    n = cfg.train.batch_size * steps
    labels = torch.as_tensor(np.sort(np.arange(n) % max(2, n // cfg.sampler.num_instances)))
    trainer = bench.bench_trainer(cfg, device, labels)
    trainer.sampler = bench.FixedBatches(n, cfg.train.batch_size, steps)
    trainer.train_epoch(epoch=1, first_step=0)  # warm-up (cuDNN autotuning, the optimiser's state)
    (seconds,), _ = timed(lambda: trainer.train_epoch(epoch=2, first_step=0), device=device)
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                          if device.type == "cuda" else [])
    with phases_marked(trainer), torch.profiler.profile(activities=activities) as prof:
        trainer.train_epoch(epoch=3, first_step=0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    host = {p: 0.0 for p in PHASES}
    for e in prof.events():
        if e.name.startswith("phase: ") and e.device_type == torch.autograd.DeviceType.CPU:
            host[e.name[len("phase: "):]] += e.time_range.elapsed_us() / 1000
    return {"wall_ms": 1000 * seconds / steps, "busy_ms": sum(e.time_range.elapsed_us() for e in kernels) / 1000 / steps,
            "kernels": len(kernels) / steps, "host_ms": {p: v / steps for p, v in host.items()}}


@contextmanager
def phases_marked(trainer) -> Iterator[None]:
    """The phases of ``trainer``'s step as profiler ranges named ``phase: <name>``, marked from outside the
    trainer: its batch method, the network's forward (module hooks), the criterion, ``Tensor.backward``, the
    optimiser's step (its hooks) and the records."""
    from reid.engine.records import StepRecords

    open_ranges: dict[str, Any] = {}

    def begin(name: str) -> None:
        open_ranges[name] = torch.profiler.record_function(f"phase: {name}")
        open_ranges[name].__enter__()

    def end(name: str) -> None:
        open_ranges.pop(name).__exit__(None, None, None)

    def around(owner: Any, attr: str, name: str):
        real = getattr(owner, attr)

        def call(*args, **kwargs):
            begin(name)
            try:
                return real(*args, **kwargs)
            finally:
                end(name)
        return real, call

    patched = [(trainer, "train_batch", "batch + augmentation"), (trainer.criterion, "batch_part", "criterion"),
               (torch.Tensor, "backward", "backward"), (StepRecords, "record", "records")]
    originals = []
    for owner, attr, name in patched:
        real, call = around(owner, attr, name)
        originals.append((owner, attr, real))
        setattr(owner, attr, call)
    hooks = [trainer.net.register_forward_pre_hook(lambda *a: begin("forward")),
             trainer.net.register_forward_hook(lambda *a: end("forward")),
             trainer.optimizer.register_step_pre_hook(lambda *a: begin("optimiser")),
             trainer.optimizer.register_step_post_hook(lambda *a: end("optimiser"))]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
        for owner, attr, real in originals:
            if isinstance(owner, type):
                setattr(owner, attr, real)
            else:  # the instance's own patch: its class's method shows again
                delattr(owner, attr)


# ----------------------------------------------------------------------------- 7. graphs

def graphs(part: Part) -> None:
    """train.cuda_graphs from the same state: 50 steps eager and 50 captured (deterministic mode), the weights'
    largest difference and the speed-up, per recipe."""
    columns = ["recipe", "eager s", "captured s", "speed-up", "weights' largest |difference|", "tensors differing"]
    if part.device != "cuda":
        part.table("train.cuda_graphs: 50 steps eager vs captured, deterministic mode", columns,
                   [[recipe, "needs CUDA", "", "", "", ""] for recipe, _ in RECIPES])
        return
    rows = []
    for recipe, file in RECIPES:
        with part.step(f"graphs {recipe}"):
            runs = {}
            for mode in ("false", "true"):
                cfg = part.config(file, "data.val_per_id=0", "train.deterministic=true", f"train.cuda_graphs={mode}")
                configure_backends(cfg.train.deterministic, cfg.train.tf32)
                runs[mode] = graphs_run(cfg, torch.device("cuda"), part.scale.graph_steps)
            (eager_s, eager_w), (captured_s, captured_w) = runs["false"], runs["true"]
            largest = max(float((eager_w[k].double() - captured_w[k].double()).abs().max()) for k in eager_w
                          if eager_w[k].is_floating_point())
            rows.append([recipe, f"{eager_s:.3f}", f"{captured_s:.3f}", f"{eager_s / captured_s:.2f}x",
                         f"{largest:.3g}", len(different_tensors(eager_w, captured_w))])
            part.table("train.cuda_graphs: 50 steps eager vs captured, deterministic mode", columns, rows)
    part.note("train.cuda_graphs: auto may turn on where every recipe is faster captured and its weights equal")


def graphs_run(cfg, device: torch.device, steps: int) -> tuple[float, dict]:
    """Seconds of ``steps`` training steps after a warm-up epoch of 5 (where a captured run captures), and the
    weights after them."""
    n = cfg.train.batch_size * steps
    labels = torch.as_tensor(np.sort(np.arange(n) % max(2, n // cfg.sampler.num_instances)))
    trainer = bench.bench_trainer(cfg, device, labels)
    trainer.sampler = bench.FixedBatches(n, cfg.train.batch_size, 5)
    torch.manual_seed(0)
    trainer.train_epoch(epoch=1, first_step=0)
    trainer.sampler = bench.FixedBatches(n, cfg.train.batch_size, steps)
    (seconds,), _ = timed(lambda: trainer.train_epoch(epoch=2, first_step=0), device=device)
    return seconds, {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}


# ----------------------------------------------------------------------------- 8. packing

def packing(part: Part) -> None:
    """Aggregate images/s of N = 1, 2, 4 runs packed on one GPU (scripts/bench.py pack), and of the N that
    ``study.sh --per-gpu auto`` picks from the GPU's free memory and one run's peak (measured here first)."""
    from reid.launch.runs import runs_per_gpu

    from ..bench import pack

    parser = argparse.ArgumentParser()
    pack.add_arguments(parser)
    bench_args = ["--device", part.device, *part.scale.bench, "--seconds", str(part.scale.pack_seconds)]
    auto, why, counts = None, "--per-gpu auto needs CUDA (it reads the GPU's free memory)", part.scale.pack_runs
    if part.device == "cuda":
        with part.step("one run's peak memory"):
            free, _ = torch.cuda.mem_get_info(0)
            auto, why = runs_per_gpu(free, one_run_peak_bytes(parser.parse_args(bench_args)))
            counts = ",".join(map(str, sorted({*map(int, counts.split(",")), auto})))
    with part.step("bench.py pack"):
        r = pack.run(parser.parse_args([*bench_args, "--runs", counts]))
        part.table("runs packed on one GPU (scripts/bench.py pack)",
                   ["runs at once", "images/s per run", "images/s total", "total vs 1 run", "peak MiB per run",
                    "--per-gpu auto"],
                   [[row["runs"], f"{row['images_per_s_per_run']:.1f}", f"{row['total_images_per_s']:.1f}",
                     f"{row['total_vs_one_run']:.2f}x", f"{row['peak_memory_mib_per_run']:.0f}",
                     "picked" if row["runs"] == auto else ""] for row in r["rows"]])
        part.note(f"--per-gpu auto: {auto if auto else 'n/a'}: {why}")


def one_run_peak_bytes(args: argparse.Namespace) -> int:
    """The peak memory of one packed run's trainer (bench.py pack's worker) after its warm-up, in this process;
    its memory is handed back to the GPU after."""
    s = bench.settings(args)
    torch.cuda.reset_peak_memory_stats()
    epoch, net = bench.trainer_loop(s.cfg, s.device, s.batch, s.steps, s.warmup, args.classes)
    epoch()
    peak = torch.cuda.max_memory_reserved(s.device)
    del epoch, net
    torch.cuda.empty_cache()
    return peak
