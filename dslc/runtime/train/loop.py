"""The training loop: seeded, deterministic, resumable at any step boundary.

Randomness has three sources, all seeded and all checkpointed: torch's CPU (and CUDA) generator,
which the model's initializers and dropout draw from; and a separate torch.Generator that draws
each epoch's shuffling permutation. A checkpoint keeps that generator's state at the start of
the current epoch, so a resumed run redraws the same permutation and skips the steps already
done; with the model, optimizer, scheduler and RNG states restored, it then repeats the
uninterrupted run's arithmetic exactly."""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from dslc.runtime.train import (
    board,
    checkpoint,
    distributed,
    finetune,
    metrics,
    precision,
    report,
)
from dslc.runtime.train.contract import Contract
from dslc.runtime.train.data import Dataset
from dslc.runtime.train.images import ImageSet

# Test-only: seconds to sleep after each step, so a test can kill a run mid-epoch.
STEP_SLEEP_ENV = "DSLC_TRAIN_STEP_SLEEP"


@dataclass
class Position:
    """Where a run is: epochs done, steps done in the current epoch, and the running state."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    best: float | None = None
    bad_epochs: int = 0  # epochs since the monitored metric last improved
    loss_sum: float = 0.0  # this epoch's example losses summed, so far
    examples: int = 0
    seconds: float = 0.0  # time spent in this epoch before an interruption
    stopped_early: bool = False


@dataclass
class Settings:
    batch_size: int
    epochs: int
    seed: int
    out: Path
    checkpoint_every: int | None = None
    monitor: str = "val_loss"
    accumulate: int = 1  # micro-batches of batch_size whose gradients make one optimizer step
    precision: str = "fp32"  # precision.CHOICES

    @property
    def step_examples(self) -> int:
        """Examples per optimizer step: the batch size times the micro-batches accumulated."""
        return self.batch_size * self.accumulate


class Trainer:
    def __init__(
        self,
        c: Contract,
        s: Settings,
        world: distributed.World,
        device: torch.device,
        train: Dataset | ImageSet,
        val: Dataset | ImageSet | None,
    ) -> None:
        self.c, self.s, self.world, self.device = c, s, world, device
        self.train, self.val = train, val
        torch.manual_seed(s.seed)  # the initializers draw from it, as in create_model's docs
        self.module = c.create_model().to(device)
        t = c.training
        self.freezer = finetune.Freezer(self.module, t.get("freeze", ()), t.get("unfreeze_at"))
        self.model = distributed.wrap(self.module, world, device)
        self.loss_fn = c.create_loss().to(device)
        self.optimizer = c.create_optimizer(self.module)
        self.steps = math.ceil(len(train) / s.step_examples)
        self.scheduler = c.create_scheduler(self.optimizer, self.steps, s.epochs)
        self.generator = torch.Generator().manual_seed(s.seed)
        self.shuffle_state = self.generator.get_state()
        self.pos = Position()
        # A loss of several terms: each term's summed example losses and examples this epoch
        # (since the epoch started, or the run resumed: not checkpointed)
        self.terms = metrics.TermSums(c.terms)
        self.signal: int | None = None
        self.log = report.MetricsLog(s.out)
        self.board = board.Board(s.out)
        self.scaler = precision.scaler(s.precision, device)
        # reduce-on-plateau steps once an epoch, on the monitored value; others once a step
        self.per_epoch_schedule = c.schedule_steps == "epoch"
        self.sleep = float(os.environ.get(STEP_SLEEP_ENV, "0") or 0)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> int | None:
        """Train to the last epoch or an early stop (None), or the signal that stopped it."""
        handlers = self._catch_signals()
        try:
            while self.pos.epoch < self.s.epochs and not self.pos.stopped_early:
                if not self._epoch():
                    return self.signal
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.board.close()
        return None

    def _epoch(self) -> bool:
        """One epoch from the current position; False when a signal stopped it."""
        start = time.perf_counter() - self.pos.seconds
        self.shuffle_state = self.generator.get_state()
        order = torch.randperm(len(self.train), generator=self.generator)
        bar = report.Progress(
            self.pos.epoch, self.s.epochs, self.steps, self.pos.step, self.world.main
        )
        self.freezer.train(self.model, self.pos.epoch)
        steps = range(self.pos.step, self.steps)
        size = self.s.step_examples
        plans = [self._plan(order[i * size : (i + 1) * size]) for i in steps]
        # every micro-batch of the epoch, decoded ahead where the data set can (image folders)
        batches = self.train.batches(
            [part for parts, _, _ in plans for part in parts], self.pos.epoch
        )
        try:
            for step, plan in zip(steps, plans, strict=True):
                self._count(self._step(plan, batches), plan[2])
                self.pos.step, self.pos.global_step = step + 1, self.pos.global_step + 1
                bar.update(self.pos.loss_sum / self.pos.examples, self._rate(start))
                if self._after_step(start):
                    return False
        finally:
            bar.close()
        self._end_epoch(time.perf_counter() - start)
        return True

    def _plan(self, index: torch.Tensor) -> tuple[list[torch.Tensor], list[float], int]:
        """This rank's micro-batches of a global batch (`accumulate` of them, whose gradients
        add up), the share of the global batch each holds, and the global batch's size."""
        local = self.world.shard(index)
        counted = len(local) > 0
        if not counted:  # a last batch smaller than the world: take part, add nothing
            local = index[:1]
        parts = list(local.split(self.s.batch_size))
        return parts, [len(p) / len(index) if counted else 0.0 for p in parts], len(index)

    def _step(self, plan: tuple[list[torch.Tensor], list[float], int], batches: Any) -> float:
        """One optimizer step on a global batch, its micro-batches taken from `batches`;
        returns this rank's summed example losses."""
        parts, shares, _ = plan
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for part, share in zip(parts, shares, strict=True):
            total += self._backward(next(batches), len(part), share)
        self._optimizer_step()
        return total if any(shares) else 0.0

    def _backward(self, batch: dict[str, torch.Tensor], examples: int, share: float) -> float:
        """Forward and backward on one micro-batch holding `share` of the global batch."""
        batch = self._to_device(batch)
        with precision.autocast(self.s.precision, self.device):
            loss, penalty, values = self._loss(self.model, batch)
        self.terms.add(values, examples, self.device)
        objective = self._objective(loss, penalty, share)
        if self.scaler is not None:
            objective = self.scaler.scale(objective)
        objective.backward()
        return metrics.batch_total(self.c, loss, examples)

    def _optimizer_step(self) -> None:
        clip = self.c.training["grad_clip"]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when the gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None and not self.per_epoch_schedule:
            self.scheduler.step()

    def _objective(self, loss: torch.Tensor, penalty: Any, share: float) -> torch.Tensor:
        """What this rank differentiates for a micro-batch holding `share` of the global
        batch, so that the gradients summed over micro-batches and averaged over the K ranks
        (DistributedDataParallel) are the global batch's: a batch-mean loss is scaled by
        share * K, a batch-sum loss by K; the penalty, counted once, like a mean. One process
        without accumulation: share 1, K 1, the loss as it is."""
        if not self.world.distributed and share == 1.0:
            return loss if penalty is None else loss + penalty
        k = self.world.size if self.world.distributed else 1
        data = loss * (k if self.c.reduction == "sum" else share * k)
        return data if penalty is None else data + penalty * (share * k)

    def _count(self, loss_sum: float, examples: int) -> None:
        (loss_sum,) = self.world.sum([loss_sum], self.device)
        self.pos.loss_sum += loss_sum
        self.pos.examples += examples

    def _after_step(self, start: float) -> bool:
        """Checkpoint when due; True when a signal asks the run to stop (checkpointed)."""
        if self.sleep:
            time.sleep(self.sleep)
        every = self.s.checkpoint_every
        stop = self.world.any(self.signal is not None, self.device)
        if stop or (every and self.pos.global_step % every == 0):
            self.pos.seconds = time.perf_counter() - start
            self.save()
        return stop

    def _loss(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any, dict]:
        """The spec's loss on a batch, its penalty (None without one), and every named tensor."""
        values = metrics.forward(self.c, model, batch)
        loss = self.loss_fn(*(values[k] for k in self.c.loss_inputs))
        return loss, self.c.penalty(self.module), values

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: t.to(self.device, non_blocking=True) for k, t in batch.items()}

    def _rate(self, start: float) -> float:
        return self.pos.examples / max(time.perf_counter() - start, 1e-9)

    # -- the end of an epoch ---------------------------------------------------------------

    def _end_epoch(self, seconds: float) -> None:
        val_loss, measured = self.validate()
        row = {
            "epoch": self.pos.epoch + 1,
            "step": self.pos.global_step,
            "train_loss": self.pos.loss_sum / max(self.pos.examples, 1),
            **self.terms.means(self.world, self.device),
            "val_loss": val_loss,
            "val_accuracy": measured.get("accuracy"),
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            **{f"val_{k}": v for k, v in measured.items() if k != "accuracy"},
        }
        row = self.world.from_main(row)  # one decision for every rank
        improved = self._monitor(row)
        if self.per_epoch_schedule and self.scheduler is not None:
            self.scheduler.step(row[self.s.monitor])
        if self.world.main:
            self.log.append(row)
            self.board.add(row)
            report.say(report.summary(row, self.s.epochs, self.pos.examples / max(seconds, 1e-9)))
            if improved:
                self._save_weights("best.safetensors", row)
        self.pos.epoch, self.pos.step, self.pos.loss_sum = row["epoch"], 0, 0.0
        self.pos.examples, self.pos.seconds = 0, 0.0
        self.save()

    def _monitor(self, row: dict[str, Any]) -> bool:
        value = row[self.s.monitor]
        sign = -1.0 if self.s.monitor == "val_accuracy" else 1.0  # lower is better for losses
        improved = not math.isnan(value) and (
            self.pos.best is None or sign * value < sign * self.pos.best
        )
        if improved:
            self.pos.best, self.pos.bad_epochs = value, 0
        else:
            self.pos.bad_epochs += 1
        patience = self.c.training["early_stopping"]
        self.pos.stopped_early = patience is not None and self.pos.bad_epochs >= patience
        return improved

    def validate(self) -> tuple[float | None, dict[str, float | None]]:
        """The mean loss over the validation set, and the metrics (metrics.py) by name."""
        if self.val is None:
            return None, {}
        loss, meter = metrics.evaluate(
            self.c,
            self.module,
            self.loss_fn,
            self.val,
            self.s.batch_size,
            self.device,
            lambda: precision.autocast(self.s.precision, self.device),
        )
        self.freezer.train(self.module, self.pos.epoch)
        return loss, meter.results()

    # -- checkpoints -----------------------------------------------------------------------

    def save(self) -> None:
        if not self.world.main:
            return
        shuffle = self.shuffle_state if self.pos.step else self.generator.get_state()
        state = {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_class": type(self.optimizer).__name__,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "rng": checkpoint.rng_state(shuffle, self.device.type == "cuda"),
            "position": asdict(self.pos),
            "settings": {
                "batch_size": self.s.batch_size,
                "seed": self.s.seed,
                "epochs": self.s.epochs,
                "accumulate": self.s.accumulate,
            },
            "scaler": self.scaler.state_dict() if self.scaler else None,
        }
        self._save_weights("last.safetensors", None)
        checkpoint.save_state(self.s.out, state)

    def _save_weights(self, name: str, row: dict[str, Any] | None) -> None:
        meta = {
            "model": self.c.name,
            "epoch": str(self.pos.epoch),
            "step": str(self.pos.global_step),
        }
        if row is not None:
            meta = {**meta, "epoch": str(row["epoch"]), self.s.monitor: repr(row[self.s.monitor])}
        checkpoint.save_weights(self.s.out / name, self.module.state_dict(), meta)

    def restore(self, state: dict[str, Any], path: Path) -> None:
        """Continue from trainer.pt's `state`, checked against this model, optimizer and
        schedule first; whatever torch still refuses is the checkpoint's fault, said so."""
        checkpoint.check_model(state["model"], self.module.state_dict(), path)
        kind = state.get("optimizer_class")
        checkpoint.check_optimizer(state["optimizer"], self.optimizer, path, kind)
        checkpoint.check_scheduler(state["scheduler"], self.scheduler, path)
        position = self._position(state["position"], path)
        try:
            self.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and state["scheduler"] is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            checkpoint.restore_rng(state["rng"])
            self.generator.set_state(state["rng"]["shuffle"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
            raise checkpoint.refuse(path, f"cannot be restored: {err}") from None
        self.pos = position

    def _position(self, saved: dict[str, Any], path: Path) -> Position:
        """The saved Position, each field of its type and within this run's epochs and steps."""
        kinds = {f.name: str(f.type) for f in fields(Position)}
        if set(saved) != set(kinds):
            odd = sorted(set(saved) ^ set(kinds))[0]
            raise checkpoint.refuse(path, f"holds a position that does not fit (`{odd}`)")
        for name, kind in kinds.items():
            if not _is(saved[name], kind):
                raise checkpoint.refuse(
                    path, f"holds position.{name} = {saved[name]!r}, not {kind}"
                )
        pos = Position(**saved)
        limits = {"epoch": self.s.epochs, "step": self.steps}
        for name in ("epoch", "step", "global_step", "bad_epochs", "examples"):
            value = getattr(pos, name)
            if value < 0 or value > limits.get(name, value):
                raise checkpoint.refuse(path, f"holds position.{name} = {value}, out of range")
        return pos

    def _catch_signals(self) -> dict[int, Any]:
        """SIGINT and SIGTERM stop the run at the next step boundary, checkpointed; a second
        one stops it at once (the last checkpoint stays valid)."""

        def stop(signum: int, _frame: Any) -> None:
            if self.signal is not None:
                raise KeyboardInterrupt
            self.signal = signum

        return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}


def _is(value: Any, kind: str) -> bool:
    """Whether `value` is of a Position field's type (written as annotated: int, float, ...)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": number,
        "float | None": value is None or number,
        "bool": isinstance(value, bool),
    }[kind]
