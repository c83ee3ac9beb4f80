"""The training loop: train and val phases per epoch, per-mini-batch history, checkpoints and
evaluation, on the data, model and criterion it is given (:func:`reid.engine.run.train`
builds them from the config through the registries and starts or resumes the run).

Every random choice derives from ``(seed, epoch, step)``, so a run resumed from any
checkpoint replays exactly what the uninterrupted run would have done, and two
runs with the same seed and different criteria see the same batches.

Example::

    trainer = Trainer(cfg, run_dir, torch.device("cpu"), data, model, criterion, DistInfo())
    trainer.fit(Position())          # every epoch, each checkpointed into run_dir
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..config import Config, to_dict, to_yaml
from ..data import (BatchAugment, PKSampler, RandomBatchSampler, SequentialBatchSampler, batch_generator,
                    Share, eval_transform, resize_images)
from ..data.augment import async_to
from ..errors import TrainingDivergedError
from ..evaluation import evaluate_datasets, evaluate_model, format_results
from ..io import atomic_write_text
from ..losses import BatchShare, CombinedCriterion
from . import distributed, graphs
from .board import FOLDER as BOARD_FOLDER, BoardMirror
from .builder import RunData
from .checkpoint import CheckpointStore
from ..machine import machine_kind, machine_record
from .device import CompiledWithFallback, autocast_dtype, eval_autocast_dtype, precision_name
from .history import History
from .optim import EpochSchedule, build_optimizer
from .records import PhaseBar, StepLines, StepRecords, step_sums
from .val_summary import ValSummary
from .stopping import PhaseStopped, Position, Progress, StopSignals


# ----------------------------------------------------------------------------- randomness

def step_seed(seed: int, epoch: int, step: int) -> int:
    """Seed of the global RNG (dropout) for one training step."""
    return int(np.random.SeedSequence([seed, epoch, step, 0x5EED]).generate_state(1)[0])


# ----------------------------------------------------------------------------- the trainer

class Trainer:
    """Runs epochs of (train, val, optional evaluation) and keeps the run directory current."""

    def __init__(self, cfg: Config, run_dir: Path, device: torch.device, data: RunData, model: nn.Module,
                 criterion: CombinedCriterion, dist: distributed.DistInfo, progress: bool = True) -> None:
        self.cfg, self.run_dir, self.device, self.data, self.dist = cfg, run_dir, device, data, dist
        self.progress = progress and dist.is_main
        self.model = model.to(device)
        self.channels_last = cfg.train.channels_last == "on" or (cfg.train.channels_last == "auto" and device.type == "cuda")
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = criterion.to(device)
        self.val_criterion = classification_terms(criterion)
        self.amp_dtype = autocast_dtype(cfg.train.precision, device)
        self.eval_amp_dtype = eval_autocast_dtype(cfg.train.precision, device)  # float32 on the CPU
        self.machine = machine_record(device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.optimizer = build_optimizer(cfg.optim, model.param_groups())
        self.extra_optimizer = criterion.extra_optimizer()
        self.schedule = EpochSchedule(cfg.schedule, cfg.train.epochs)
        self.share_dropouts: list[distributed.ShareDropout] = []  # under torchrun: given each step's Share
        self.net = self._wrap_for_training(self.model)
        self.augment = BatchAugment(size=tuple(cfg.data.size), flip_p=cfg.augment.flip, pad=cfg.augment.pad,
                                    erasing_p=cfg.augment.erasing, erasing_area=tuple(cfg.augment.erasing_area),
                                    erasing_ratio=tuple(cfg.augment.erasing_ratio), channels_last=self.channels_last)
        self.sampler = build_sampler(cfg, data, dist.world_size)
        # Resident: the uint8 cache lives on the training device and batches are gathered there.
        # Off: it stays in host memory and each batch is gathered, then copied (GPUs short of memory).
        self.resident_cache = cfg.data.device_cache in ("on", "auto")
        self.image_device = device if self.resident_cache else torch.device("cpu")
        # Resized to the network's input once, not per batch: the same pixels, half the work per step.
        size = tuple(cfg.data.size)
        self.train_images = resize_images(data.train_images, size).to(self.image_device)
        self.val_images = resize_images(data.val_images, size).to(self.image_device)
        self.train_labels = data.train_labels.to(device)
        self.val_labels = data.val_labels.to(device)
        self.history = History(criterion=" + ".join(criterion.names), config_text=to_yaml(cfg))
        self.log_lines: list[str] = []
        self.store = CheckpointStore(run_dir)
        self.board = BoardMirror(run_dir / BOARD_FOLDER) if cfg.train.tensorboard and dist.is_main else None
        self.stops = StopSignals(dist, device)  # SIGTERM/SIGUSR1 while fit() runs in stops.listening()
        self.position = Progress(self.store.last)
        self.step_lines = StepLines(self.progress)  # where no bar is shown: see reid/engine/records.py
        self.run_step = self.step_runner()  # train_step, or its captured replay (train.cuda_graphs)

    def _wrap_for_training(self, model: nn.Module) -> nn.Module:
        net = model
        if self.dist.enabled:
            net = distributed.with_batchnorm_sync(net, self.cfg.train.sync_bn, self.device, self.dist.world_size)
            self.share_dropouts = distributed.with_share_dropout(net)
            ids = [self.device.index] if self.device.type == "cuda" else None
            # criteria of features only (triplet, center) leave the classifier without a gradient, which DDP
            # refuses unless it looks for unused parameters (a graph walk per step, so only then)
            features_only = all(getattr(m, "needs_features", False) for _, _, m in self.criterion.terms)
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids, find_unused_parameters=features_only)
            if not features_only:  # DDP regroups its buckets after the first step unless it looks for unused ones
                net = distributed.with_settled_buckets(net, self.blank_share(), self.share_dropouts, self.autocast(),
                                                       self.dist.rank, self.dist.world_size)
        if self.cfg.train.compile:
            net = CompiledWithFallback(net)
        return net

    # -- state ---------------------------------------------------------------------------
    def state_dict(self, position: Position, finished: bool) -> dict:
        return {
            "epoch": position.epoch, "step": position.step, "epoch_done": position.epoch_done, "finished": finished,
            "model": self.model.state_dict(), "criterion": self.criterion.state_dict(),
            "optimizer": graphs.plain_learning_rates(self.optimizer.state_dict()),
            "extra_optimizer": self.extra_optimizer.state_dict() if self.extra_optimizer else None,
            "scheduler": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
            "precision": precision_name(self.amp_dtype), "machine": self.machine,
            "history": self.history.state_dict(), "log": list(self.log_lines),
            "config": to_dict(self.cfg), "config_yaml": to_yaml(self.cfg),
        }

    def load_state_dict(self, state: dict) -> Position:
        """Continue from the checkpoint ``state``; returns the position to continue at."""
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.extra_optimizer and state.get("extra_optimizer"):
            self.extra_optimizer.load_state_dict(state["extra_optimizer"])
        self.history = History.from_state_dict(state["history"])
        self.history.config_text = to_yaml(self.cfg)
        self.log_lines = list(state.get("log", []))
        self.load_scaler_state(state)
        saved = state.get("machine")
        if saved and machine_kind(saved) != machine_kind(self.machine):
            self.log(f"warning: the checkpoint was trained on {machine_kind(saved)} and continues on "
                     f"{machine_kind(self.machine)}: the run's numbers depend on both")
        return self.position.resumed(Position(state["epoch"], state["step"], state["epoch_done"]))

    def load_scaler_state(self, state: dict) -> None:
        """The GradScaler's state where it carries over; a run may resume in another effective precision
        (``precision: auto`` on another device): fp16 then starts a fresh scaler, and the change is logged."""
        saved, now = state.get("precision"), precision_name(self.amp_dtype)
        if saved is not None and saved != now:
            self.log(f"warning: the checkpoint was trained in {saved} and continues in {now} on {self.device}")
        if state["scaler"] and self.scaler.is_enabled():  # a disabled scaler saves {}
            self.scaler.load_state_dict(state["scaler"])

    def save(self, position: Position, finished: bool = False) -> None:
        """Checkpoint, then the .mat and log of the same moment: written in the background while training goes
        on, in that order (a .mat on disk has its checkpoint on disk), all atomic, rank 0 only."""
        if self.dist.is_main:
            self.store.save_in_background(self.state_dict(position, finished), then=self.write_saved_history)
        self.position.checkpointed(position)

    def write_history(self) -> None:
        self.write_run_files(self.history, self.log_lines)

    def write_saved_history(self, state: dict) -> None:
        """The .mat and log of a checkpoint's ``state`` (its copy, in the checkpoint's writer thread)."""
        self.write_run_files(History.from_state_dict(state["history"]), state["log"])

    def write_run_files(self, history: History, log_lines: list[str]) -> None:
        if self.dist.is_main:
            history.save_mat(self.run_dir / "mini_batch_data.mat")
            atomic_write_text(self.run_dir / "log.txt", "".join(line + "\n" for line in log_lines))
            if self.board is not None:
                self.board.write(history)

    def log(self, line: str) -> None:
        self.log_lines.append(line)
        if self.dist.is_main:
            tqdm.write(line)

    # -- the loop ------------------------------------------------------------------------
    def fit(self, start: Position) -> None:
        try:
            self.fit_epochs(start)
        finally:  # the end of the run, a stop or an error: the checkpoint being written reaches the disk
            self.store.wait()

    def fit_epochs(self, start: Position) -> None:
        for epoch in range(start.epoch, self.cfg.train.epochs + 1):
            started = time.perf_counter()
            self.schedule.apply(self.optimizer, epoch)
            first_step = start.step if epoch == start.epoch else 0
            steps = self.train_epoch(epoch, first_step)
            last = epoch == self.cfg.train.epochs
            done = self.stops.all_done(self.end_epoch(epoch, last))
            if done:
                self.log(self.epoch_line(epoch, time.perf_counter() - started))
            stop = self.stops.agreed()  # every process asks, so that they agree (rank 0 alone evaluates)
            self.save(Position(epoch, steps, epoch_done=done), finished=last and done)
            if stop and not (last and done):
                self.stop(epoch, steps)

    def stop(self, epoch: int, step: int) -> NoReturn:
        """End the run after the checkpoint of (epoch, step) is on disk (before the processes part)."""
        self.store.wait()
        self.stops.stop(epoch, step)

    def end_epoch(self, epoch: int, last: bool) -> bool:
        """Validation, then the evaluation when one is due, recorded together; False when a stop signal cut
        either short (checked at each val batch and between evaluation phases), which records neither: the
        checkpoint then holds the epoch's training steps, and the resumed run validates and evaluates again.
        A time-limit warning thus never waits for a long evaluation."""
        every = self.cfg.eval.every_epochs
        try:
            val = self.val_epoch(epoch)
            results = self.evaluate(epoch, write_files=last) if last or (every and epoch % every == 0) else None
        except PhaseStopped:
            return False
        if val is not None:
            means, sizes, summary = val
            self.history.extend("val", epoch, **means, batch_size=sizes)
            self.history.add_val_summary(epoch, summary)
        if results is not None:
            self.history.add_evaluation(epoch, results)
        return True

    def train_epoch(self, epoch: int, first_step: int) -> int:
        """Train steps ``first_step..`` of ``epoch``; returns the epoch's number of steps."""
        batches = self.sampler.batches(epoch)
        records = StepRecords([len(b) for b in batches], self.device)
        records.flushed = first_step
        lr = self.optimizer.param_groups[-1]["base_lr"] * self.schedule.factor(epoch)  # the head's rate
        every = self.cfg.checkpoint.every_steps
        self.net.train()
        with self.progress_bar(epoch, "train", batches[first_step:], len(batches)) as bar:
            for step in range(first_step, len(batches)):
                images, labels = self.train_batch(batches[step], epoch, step)
                torch.manual_seed(step_seed(self.cfg.seed, epoch, step))  # dropout
                records.record(step, self.run_step(images, labels))
                self.position.stepped(epoch, step + 1)
                bar.advance(len(batches[step]), records, step + 1)
                stop = step + 1 < len(batches) and self.stops.agreed(step + 1)
                if stop or (every and (step + 1) % every == 0 and step + 1 < len(batches)):
                    self.flush_train(epoch, records, step + 1, lr)
                    self.save(Position(epoch, step + 1))
                if stop:
                    self.stop(epoch, step + 1)
        self.flush_train(epoch, records, len(batches), lr)
        return len(batches)

    def train_step(self, images: torch.Tensor, batch_labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward, loss in float32, backward, optimiser step on this process's ``images`` of a global batch
        whose labels are ``batch_labels``; returns this process's sums of the step's records on the device
        (:func:`reid.engine.records.step_sums`: the loss, the number correct, the plain cross entropy).
        """
        share = self.share_of(len(batch_labels))
        with self.autocast(), distributed.dropout_share(self.share_dropouts, share):
            logits, features = self.net(images)
        batch = BatchShare.of(share, logits.float(), features.float(), batch_labels)
        part = self.criterion.batch_part(batch)
        self.zero_grad()
        # DDP averages the processes' gradients; world_size x each part turns that average into the sum of
        # the parts' gradients, which is the gradient of the global batch's loss (the 1-process gradient)
        self.scaler.scale(part * self.dist.world_size).backward()
        self.average_criterion_grads()
        for optimizer in self.optimizers():
            self.scaler.step(optimizer)
        self.scaler.update()
        return step_sums(batch, part)

    def step_runner(self) -> Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
        """:meth:`train_step`, or its captured replay where ``train.cuda_graphs`` is true and the step can be
        captured (else one log line says why it runs eagerly); ``auto`` is off until a GPU check shows the
        captured step faster and equal (README)."""
        if self.cfg.train.cuda_graphs is not True:
            return self.train_step
        reason = graphs.eager_reason(self.device, self.dist.enabled, self.scaler.is_enabled())
        if reason:
            self.log(f"train.cuda_graphs: the step runs eagerly: {reason}")
            return self.train_step
        return graphs.CapturedStep(self.train_step, before_capture=self.prepare_capture, log=self.log)

    def prepare_capture(self) -> None:
        """What changes between steps, in device tensors a captured step reads: the learning rates (the
        schedule fills them in place). The criterion's own optimiser keeps its constant rate."""
        graphs.learning_rates_on_device(self.optimizer, self.device)

    def share_of(self, batch_size: int) -> Share:
        """This process's share of a global batch of ``batch_size`` (all of it with one process)."""
        return Share(batch_size, self.dist.rank, self.dist.world_size)

    def blank_share(self) -> torch.Tensor:
        """Two all-zero images of the training input's shape and memory layout, on the device."""
        images = torch.zeros(2, 3, *self.cfg.data.size, device=self.device)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def autocast(self) -> torch.autocast:
        # No cast cache: a captured step must not keep casts across replays (PyTorch's CUDA-graphs notes), and
        # the model uses each weight once per forward, so the cache saved no cast.
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None, cache_enabled=False)

    def average_criterion_grads(self) -> None:
        """DDP averages the model's gradients across ranks; the criterion's own (center loss) are done here:
        each rank's is world_size x the gradient of its part, so their average is the global batch's."""
        if not (self.dist.enabled and self.extra_optimizer):
            return
        for group in self.extra_optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    distributed.all_reduce_sum(p.grad).div_(self.dist.world_size)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer] + ([self.extra_optimizer] if self.extra_optimizer else [])

    def zero_grad(self) -> None:
        for optimizer in self.optimizers():
            optimizer.zero_grad(set_to_none=True)

    def train_batch(self, global_idx: np.ndarray, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's augmented images of one step and the labels of the whole global batch
        (the criterion compares samples across processes; this rank's are the rows of its share).

        The augmentation is drawn for the whole global batch from ``(seed, epoch, step)`` and
        each rank applies its slice, so the result does not depend on the number of processes.
        """
        params = self.augment.sample_params(len(global_idx), batch_generator(self.cfg.seed, epoch, step))
        share = self.share_of(len(global_idx))
        on_images, on_device = self.rows(global_idx)
        on_images = share.rows(on_images)
        params = params.slice(share.lo, share.hi)
        if self.resident_cache:  # gather inside apply, on the device
            out = self.augment.apply(self.train_images, params, index=on_images)
        else:
            out = self.augment.apply(async_to(self.train_images[on_images], self.device), params)
        return out, self.train_labels[on_device]

    def rows(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``idx`` as index tensors on the cache's device and on the training device (one copy when they agree)."""
        on_images = async_to(torch.from_numpy(idx), self.image_device)
        return on_images, on_images if self.image_device == self.device else async_to(on_images, self.device)

    def flush_train(self, epoch: int, records: StepRecords, upto: int, lr: float) -> None:
        means, sizes = records.take(upto)
        self.history.extend("train", epoch, **means, batch_size=sizes, lr=[lr] * len(sizes))
        self.stop_if_diverged(epoch, means["loss"], upto - len(sizes))

    def stop_if_diverged(self, epoch: int, losses: list[float], first_step: int) -> None:
        bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
        if not bad:
            return
        step = first_step + bad[0] + 1
        self.store.wait()
        self.write_history()
        last = self.store.last if self.store.last.exists() else None
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise TrainingDivergedError(
            f"the loss became {losses[bad[0]]} at epoch {epoch}, step {step}; {where}; "
            "resuming would diverge at the same step, so lower optim.lr or check the criterion and start a "
            "new run (set output.name)")

    @torch.no_grad()
    def val_epoch(self, epoch: int) -> Optional[tuple[dict[str, list[float]], list[int], dict[str, float]]]:
        """The val phase's per-batch records by name, the batches' sizes and the whole split's ECE, confidence
        and feature ratio (:class:`ValSummary`); None without val images; :class:`PhaseStopped` when a stop
        signal arrives."""
        if len(self.val_labels) == 0:
            return None
        batches = SequentialBatchSampler(len(self.val_labels), self.cfg.train.batch_size,
                                         min_batch=self.dist.world_size).batches(0)  # no process left empty
        records = StepRecords([len(b) for b in batches], self.device)
        summary = ValSummary(self.val_labels, self.device)
        self.model.eval()
        with self.progress_bar(epoch, "val", batches, len(batches)) as bar:
            for step, global_idx in enumerate(batches):
                if self.stops.agreed(step + 1):
                    raise PhaseStopped
                share = self.share_of(len(global_idx))
                on_images, on_device = self.rows(global_idx)
                images = eval_transform(async_to(self.val_images[share.rows(on_images)], self.device),
                                        tuple(self.cfg.data.size), channels_last=self.channels_last)
                with self.autocast():  # eval mode: the retrieval feature, then the classifier
                    features = self.model(images)
                    logits = self.model.classifier(features)
                batch = BatchShare.of(share, logits.float(), None, self.val_labels[on_device])
                records.record(step, step_sums(batch, self.val_criterion.batch_part(batch)))
                summary.add(share.rows(on_device), batch.logits, batch.targets, features)
                bar.advance(len(global_idx), records, step + 1)
        return (*records.take(len(batches)), summary.result())

    def evaluate(self, epoch: int, write_files: bool) -> Optional[dict]:
        """Rank-k / mAP on query vs gallery (rank 0; None on the others); :class:`PhaseStopped` when a stop
        signal arrives before its last phase (rank 0 reads its own flag between phases)."""
        results = None
        try:
            if self.dist.is_main:
                results = self.evaluate_main(epoch, write_files)
        finally:
            distributed.barrier()
        return results

    def evaluate_main(self, epoch: int, write_files: bool) -> dict:
        def check_stop() -> None:
            if self.stops.received:
                raise PhaseStopped

        results = evaluate_model(self.model, self.data, self.cfg, self.device, self.eval_amp_dtype, self.channels_last,
                                 features_path=self.run_dir / "features.mat" if write_files else None,
                                 between_phases=check_stop)
        results["epoch"] = epoch
        if write_files and self.data.eval_sets:  # cross-domain: the final model only
            results["datasets"] = evaluate_datasets(self.model, self.data.eval_sets, self.cfg, self.device,
                                                    self.eval_amp_dtype, self.channels_last, self.progress, check_stop)
        check_stop()
        results["machine"] = self.machine
        if write_files:
            atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2) + "\n")
            tqdm.write(format_results(results))
        return results

    def epoch_line(self, epoch: int, seconds: float) -> str:
        h, c = self.history, self.history.columns
        line = (f"epoch {epoch}/{self.cfg.train.epochs} train_loss {h.epoch_mean('train', 'loss', epoch):.4f} "
                f"train_acc {h.epoch_mean('train', 'acc', epoch):.4f} ")
        if len(self.val_labels):  # data.val_per_id: 0 has no val phase
            line += f"val_loss {h.epoch_mean('val', 'loss', epoch):.4f} val_acc {h.epoch_mean('val', 'acc', epoch):.4f} "
        line += f"lr {c['train_lr'][-1]:.2e} time {seconds:.1f}s"
        if c["eval_epoch"] and c["eval_epoch"][-1] == epoch:
            line += f" rank1 {c['eval_rank1'][-1]:.4f} mAP {c['eval_mAP'][-1]:.4f}"
        for name in h.evaluated_datasets():
            if c[f"eval_epoch_{name}"][-1] == epoch:
                line += f" {name}_rank1 {c[f'eval_rank1_{name}'][-1]:.4f} {name}_mAP {c[f'eval_mAP_{name}'][-1]:.4f}"
        return line

    def progress_bar(self, epoch: int, phase: str, batches: list[np.ndarray], steps: int) -> "PhaseBar":
        """The bar over ``batches`` (the phase's ``steps`` steps, or its steps left after a resume)."""
        return PhaseBar(f"epoch {epoch}/{self.cfg.train.epochs} {phase}", sum(len(b) for b in batches),
                        self.device, enabled=self.progress, steps=steps, lines=self.step_lines)


# ----------------------------------------------------------------------------- pieces

def classification_terms(criterion: CombinedCriterion) -> CombinedCriterion:
    """The criterion without its feature terms: the val loss (val batches hold no positive pairs)."""
    terms = [t for t in criterion.terms if not getattr(t[2], "needs_features", False)]
    return CombinedCriterion(terms) if terms else CombinedCriterion([("cross_entropy", 1.0, _plain_ce())])


def _plain_ce() -> nn.Module:
    from ..losses import CRITERIA
    return CRITERIA.get("cross_entropy")()


def build_sampler(cfg: Config, data: RunData, world_size: int = 1) -> Any:
    """The train sampler; its last batch is merged when it would leave a process fewer than 2 images."""
    n, b = len(data.train_labels), cfg.train.batch_size
    if cfg.sampler.name == "pk":  # every batch is full: P x K
        return PKSampler(data.split.train_labels, b // cfg.sampler.num_instances, cfg.sampler.num_instances, cfg.seed)
    return RandomBatchSampler(n, b, cfg.seed, min_batch=2 * world_size)


