"""``train.cuda_graphs``: the whole training step (forward, criterion, backward, optimiser step)
captured once as a CUDA graph and replayed, so that a step costs one launch instead of about
a thousand.

A captured graph replays the kernels it recorded on the memory it recorded, so:

- the step runs eagerly for its first :data:`WARMUP_STEPS` batches of a shape (the optimiser's
  state then exists and cuDNN has chosen its kernels), then it is captured on static input
  buffers; each later batch of that shape is copied into the buffers (after its augmentation)
  and the graph replayed;
- a batch of another shape (a random sampler's short last batch) runs eagerly;
- what changes between steps lives in device tensors the graph reads: the learning rate
  (:func:`learning_rates_on_device`; the schedule then fills it in place), the dropout seed
  (PyTorch's graph-safe generator reads the seed set by ``torch.manual_seed`` at each replay);
- the step's outputs (its per-mini-batch records) are static tensors, overwritten by the next
  replay: the caller copies them out on the device (``StepRecords.record``), with no host sync.

What cannot be captured runs eagerly, with one log line saying why (:func:`eager_reason`, and a
capture that fails, e.g. a criterion reading a value back to the host with ``.item()``).

The capture mechanism is injectable: :data:`CAPTURE` is :class:`CudaGraphCapture`; a stand-in
that records the step function and "replays" it by calling it on the static buffers lets the
CPU tests check the plumbing.

Example::

    step = CapturedStep(trainer.train_step, before_capture=trainer.prepare_capture, log=print)
    sums = step(images, labels)   # eager, eager, eager, then captured and replayed (static outputs)
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Optional, Sequence

import torch

WARMUP_STEPS = 3  # eager steps of a shape before it is captured (PyTorch's CUDA-graphs notes use 3)

Outputs = Any
StepFn = Callable[..., Outputs]
Replay = Callable[[], Outputs]


class CudaGraphCapture:
    """Captures ``step()`` with ``torch.cuda.graph``; the replay returns the step's static outputs."""

    device_types = ("cuda",)

    def __call__(self, step: Callable[[], Outputs]) -> Replay:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records the kernels; it runs none of them
            outputs = step()

        def replay() -> Outputs:
            graph.replay()
            return outputs

        return replay


CAPTURE: Any = CudaGraphCapture()  # the capture the trainer uses (CPU tests put a stand-in here)


def eager_reason(device: torch.device, distributed: bool, grad_scaler: bool) -> Optional[str]:
    """Why ``train.cuda_graphs: true`` cannot capture this run's step (None when it can)."""
    if device.type not in CAPTURE.device_types:
        return f"a captured step needs CUDA and this run trains on {device.type}"
    if distributed:
        return ("under torchrun each step all-reduces gradients across processes, which a graph captured in one "
                "process does not replay")
    if grad_scaler:
        return ("fp16's GradScaler decides on the host whether each step is skipped; use train.precision: bf16 "
                "(or fp32) to capture the step")
    return None


def learning_rates_on_device(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Each param group's learning rate as a 0-dim float32 tensor on ``device`` (same value), which a
    captured step reads at every replay: the schedule then fills it in place (:func:`reid.engine.optim.set_learning_rate`).
    Adam/AdamW groups become ``capturable`` (their step counter on the device) on CUDA."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
        if "capturable" in group and device.type == "cuda":
            group["capturable"] = True


def plain_learning_rates(optimizer_state: dict) -> dict:
    """An optimiser ``state_dict()`` with its groups' learning rates as floats, so that a checkpoint
    resumes in either mode (one host read per checkpoint)."""
    for group in optimizer_state["param_groups"]:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"] = float(group["lr"])
    return optimizer_state


def shape_key(tensors: Sequence[torch.Tensor]) -> tuple:
    """What a captured graph fixes about its inputs: shape, strides (memory format), dtype, device."""
    return tuple((tuple(t.shape), t.stride(), t.dtype, t.device) for t in tensors)


class CapturedStep:
    """``step(*inputs)`` run eagerly for the first ``warmup`` batches of a shape, then captured once on
    static copies of the inputs and replayed; other shapes run eagerly. Returns the step's outputs;
    a replay's are static tensors that the next replay overwrites (copy them out first).

    ``before_capture()`` runs once, just before the capture (move what changes per step into device
    tensors); ``log(line)`` gets the one line saying why the step runs eagerly when the capture fails.
    """

    def __init__(self, step: StepFn, before_capture: Callable[[], None], log: Callable[[str], None],
                 capture: Any = None, warmup: int = WARMUP_STEPS) -> None:
        self.step, self.before_capture, self.log = step, before_capture, log
        self.capture = capture if capture is not None else CAPTURE
        self.warmup = warmup
        self.eager_runs: Counter = Counter()  # eager steps per shape key, before the capture
        self.key: Optional[tuple] = None      # the captured shape
        self.static: list[torch.Tensor] = []  # the graph's input buffers
        self.replay: Optional[Replay] = None
        self.failed = False

    def __call__(self, *inputs: torch.Tensor) -> Outputs:
        key = shape_key(inputs)
        if self.replay is not None and key == self.key:
            return self.replay_on(inputs)
        if self.replay is None and not self.failed and self.eager_runs[key] >= self.warmup:
            self.capture_on(inputs, key)
            if self.replay is not None:
                return self.replay_on(inputs)
        self.eager_runs[key] += 1
        return self.step(*inputs)

    def replay_on(self, inputs: Sequence[torch.Tensor]) -> Outputs:
        for buffer, x in zip(self.static, inputs):
            buffer.copy_(x, non_blocking=True)
        return self.replay()

    def capture_on(self, inputs: Sequence[torch.Tensor], key: tuple) -> None:
        self.before_capture()
        self.static = [x.clone(memory_format=torch.preserve_format) for x in inputs]
        try:
            self.replay = self.capture(lambda: self.step(*self.static))
            self.key = key
        except Exception as e:  # noqa: BLE001 - anything the step does that a graph cannot hold
            self.failed, self.static = True, []
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self.log(f"train.cuda_graphs: the step runs eagerly: it cannot be captured ({type(e).__name__}: {first}); "
                     "a criterion that reads a value back to the host (.item(), .cpu(), a Python if on a tensor) "
                     "cannot be, for one")
