"""Whether this CPU's bfloat16 kernels compute the run's own model correctly and repeatably.

On some CPUs (seen with oneDNN's AMX and AVX512-BF16 kernels) a bf16 convolution or matmul of some
shapes returns garbage that differs from call to call: a bf16 run there is neither right nor
repeatable. The fault depends on the layer shapes, batch size included (on one CPU a ResNet-18 at
32x16 passed with a batch of 2 and failed with a batch of 8), so the check runs the run's own model at
its own image size, not a generic block, with a batch of 2 and with the run's training batch (per
process): forward and backward under bf16 autocast, twice each; the two passes must agree bit for bit
(loss and every gradient), be finite, and agree with float32 within bf16's precision (the loss) or
its order of magnitude (the gradient's norm, see below). Seconds for the demo; about half a minute
for ResNet-50 at 256x128 with a batch of 64 (a CPU run of it takes days).

Example::

    problem = bf16_problem(lambda dtype: model_pass(model, images, labels, dtype))
    if problem: ...                                     # e.g. 'two identical passes differ (loss 1.3 vs 1.4)'
    require_cpu_bf16(cfg, model, num_classes)           # raises ConfigError naming the CPU and the remedy
"""

from __future__ import annotations

import copy
import math
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..errors import ConfigError
from ..machine import cpu_model_and_flags

# bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%); through a deep network the loss moves by a
# few times that. The gradient of a batch of 2 is not comparable that closely: BatchNorm in train mode
# normalises each channel over 2 images, which magnifies rounding (bf16 and float32 gradients of a correct
# ResNet-50 at 256x128 point in unrelated directions, their norms within 2x). A broken kernel is off by
# orders of magnitude (1e28 and more seen), NaN, or different from call to call.
LOSS_TOLERANCE = 0.05         # |loss_bf16 - loss_fp32| <= LOSS_TOLERANCE x max(1, |loss_fp32|)
GRADIENT_NORM_RATIO = 1000.0  # neither gradient's norm more than this times the other's


class Pass(NamedTuple):
    """One forward and backward: the loss and every parameter's gradient, flattened into one vector."""
    loss: torch.Tensor
    gradient: torch.Tensor


def model_pass(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dtype: Optional[torch.dtype]) -> Pass:
    """Forward (train mode) and backward of the cross entropy on a copy of ``model``, under autocast to
    ``dtype`` (None = float32); ``model`` itself is left as it was."""
    net = copy.deepcopy(model).train()
    torch.manual_seed(0)  # dropout draws the same mask in every pass
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        logits, _ = net(images)
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    grads = [p.grad.detach().float().flatten() for p in net.parameters() if p.grad is not None]
    return Pass(loss.detach().float(), torch.cat(grads))


def bf16_problem(run_pass: Callable[[Optional[torch.dtype]], Pass]) -> Optional[str]:
    """What is wrong with bf16 passes of ``run_pass`` (two under bf16, one in float32), None when nothing is."""
    first, second = run_pass(torch.bfloat16), run_pass(torch.bfloat16)
    if not all(torch.isfinite(x.loss) and torch.isfinite(x.gradient).all() for x in (first, second)):
        return "a bf16 pass gave NaN or inf"
    if not (torch.equal(first.loss, second.loss) and torch.equal(first.gradient, second.gradient)):
        loss_gap = (first.loss - second.loss).abs().item()
        gradient_gap = (first.gradient - second.gradient).abs().max().item()
        return (f"two identical bf16 passes gave different results (the losses differ by {loss_gap:.3g}, "
                f"a gradient entry by {gradient_gap:.3g})")
    ref = run_pass(None)
    if abs(first.loss - ref.loss) > LOSS_TOLERANCE * max(1.0, abs(ref.loss.item())):
        return f"the bf16 loss {first.loss.item():.6g} is far from float32's {ref.loss.item():.6g}"
    norms = first.gradient.double().norm().item(), ref.gradient.double().norm().item()  # no overflow
    if max(norms) > GRADIENT_NORM_RATIO * min(norms):
        return f"the bf16 gradient's norm {norms[0]:.4g} is far from float32's {norms[1]:.4g}"
    return None


def test_batch_sizes(batch_size: int, world_size: int = 1) -> list[int]:
    """The batches the self-test runs: 2 and the largest per-process share of the training batch."""
    return sorted({2, math.ceil(batch_size / world_size)})


def require_cpu_bf16(cfg: Config, model: nn.Module, num_classes: int, world_size: int = 1) -> None:
    """Raise :class:`ConfigError` (one line: the CPU, its bf16 features, torch's version and the remedy)
    when bf16 passes of ``model`` at ``cfg.data.size`` are wrong or unrepeatable on this CPU, with a batch
    of 2 or of the training batch (each pass is :func:`model_pass`; tests replace it with a stand-in)."""
    for batch in test_batch_sizes(cfg.train.batch_size, world_size):
        g = torch.Generator().manual_seed(cfg.seed)
        images = torch.rand(batch, 3, *cfg.data.size, generator=g) * 2 - 1
        labels = torch.randint(0, num_classes, (batch,), generator=g)
        problem = bf16_problem(lambda dtype: model_pass(model, images, labels, dtype))
        if problem is not None:
            cpu, flags = cpu_model_and_flags()
            features = ", ".join(f for f in flags if "amx" in f or "bf16" in f) or "no AMX or AVX512-BF16"
            raise ConfigError(
                f"train.precision = bf16: this CPU's bf16 kernels fail the self-test on {cfg.model.name} at "
                f"{cfg.data.size[0]}x{cfg.data.size[1]} with a batch of {batch}: {problem} ({cpu}, {features}, "
                f"torch {torch.__version__}); train in float32 with --set train.precision=fp32, or in bf16 on a GPU")
