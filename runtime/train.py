"""The training loop: one device or many, resumable to the bit, never losing the last good checkpoint.

A run is a folder (``runs/<spec>/<UTC time>/`` unless ``--run``)::

    config.json         spec text and hash, overrides, resolved variables and train block, options,
                        versions, world size, seed
    metrics.jsonl       one row per logged step and per evaluation (runtime.metrics)
    checkpoints/last.pt every --checkpoint-every steps, at the end, and on SIGTERM / SIGINT
    checkpoints/best.pt the checkpoint with the best test bits/dim so far
    samples/step-N.png  sample grids at each evaluation
    curves.png          train and test bits/dim against step

What makes a resumed run log the same losses, bit for bit, as one never stopped: the checkpoint
holds the model, optimizer, EMA, step, epoch and position in the epoch, and every generator's
state (torch CPU and CUDA, numpy, python; one entry per rank); the data order and augmentation are
functions of (seed, epoch, position) only (runtime.data); the learning rate is a function of the
step only (runtime.schedule); evaluation and sampling run under ``torch.random.fork_rng`` with
their own seed, so how often a run evaluates never shifts the training noise.

A step whose loss or gradient norm is not finite is reported and skipped: its update is never
applied (no optimizer step, no EMA update). ``max_bad_steps`` skipped steps in a row stop the run,
naming the last good checkpoint; a checkpoint is written only from a model whose parameters are
all finite, so a bad state never replaces a good one.
"""
from __future__ import annotations

import json
import math
import os
import platform
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import distributed as D
from .checkpoint import (CheckpointError, load_checkpoint, load_state, save_checkpoint, spec_hash)
from .metrics import MetricsLog, plot_curves
from .schedule import lr_at, total_steps

LN2 = math.log(2)


class TrainError(Exception):
    """A run that cannot start or continue for a reason the user can fix (message says how)."""


@dataclass
class TrainOptions:
    """What the command line adds to a spec's ``train:`` block."""

    run: str | None = None
    steps: int | None = None
    epochs: int | None = None
    batch: int | None = None
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False
    data_root: str | None = None
    download: bool = False
    seed: int | None = None
    checkpoint_every: int = 1000
    log_every: int = 50
    eval_every: int | None = None      # steps; default: each epoch, at most ~10 times a run (and at the end)
    eval_images: int = 1000            # test images of the in-training evaluation
    sample_n: int = 64                 # images in each samples/step-N.png
    max_bad_steps: int = 20
    workers: int = 0
    force: bool = False
    progress: bool = True


@dataclass
class RunResult:
    run: str
    step: int
    epoch: int
    stopped: str                       # "done", "signal SIGTERM", "bad steps"
    train_bpd: float | None = None
    test_bpd: float | None = None
    best_bpd: float | None = None
    images_per_s: float | None = None
    seconds: float = 0.0
    checkpoint: str | None = None
    bad_steps: int = 0
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- RNG state
def capture_rng() -> dict:
    """Every generator a training step may draw from (torch CPU and CUDA, numpy, python)."""
    st = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": st[0], "key": torch.from_numpy(st[1].astype(np.int64)), "pos": int(st[2]),
                  "has_gauss": int(st[3]), "gauss": float(st[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def seed_everything(seed: int, rank: int) -> None:
    """Each rank draws its own model noise (dequantization, q-samples, dropout): seed + rank."""
    s = seed + 1_000_003 * rank
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


def versions() -> dict:
    from .. import __version__
    return {"augflow_dsl": str(__version__), "torch": str(torch.__version__), "python": platform.python_version(),
            "numpy": str(np.__version__)}


def mark_initialized(model: torch.nn.Module) -> None:
    """After a broadcast or a load, refresh the Python-side 'initialised' mirrors from the buffers."""
    from ..layers.base import InitOnce
    for m in model.modules():
        if isinstance(m, InitOnce) and hasattr(m, "initialized"):
            m._done = bool(m.initialized)


def backward_and_clip(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                      clip: float | None) -> torch.Tensor:
    """A training step up to the optimizer's update: zero the gradients, backpropagate ``loss``,
    clip the gradients' total norm to ``clip`` (None: no clipping). Returns the norm before
    clipping. (examples/bench_memory_plan.py measures a step made of the same calls.)"""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if clip is not None:
        torch.nn.utils.clip_grads_with_norm_(params, clip, gnorm)
    return gnorm


def _fault(step: int) -> str | None:
    """Fault injection for the runtime's own tests (``AUGFLOW_FAULT=kill@7`` or ``nan@5``): what to do
    at update ``step``. Unset in normal use."""
    spec = os.environ.get("AUGFLOW_FAULT")
    if not spec:
        return None
    for item in spec.split(","):
        what, _, at = item.partition("@")
        lo, _, hi = at.partition("-")
        if lo and int(lo) <= step <= int(hi or lo):
            return what
    return None


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    """Trains one compiled spec in one run folder (``run()``); rank 0 alone writes files."""

    def __init__(self, spec, overrides: dict[str, Any], train_overrides: dict[str, Any], opts: TrainOptions,
                 console=None, on_progress: Callable | None = None, resume_from: dict | None = None):
        self.spec, self.overrides, self.train_overrides, self.opts = spec, dict(overrides), dict(train_overrides), opts
        try:
            self.train = spec.train.merged(train_overrides, batch=opts.batch, steps=opts.steps, epochs=opts.epochs,
                                           seed=opts.seed)
        except ValueError as e:  # an unknown or ill-typed train.* key
            raise TrainError(f"train settings: {e}") from None
        self.console = console
        self.on_progress = on_progress
        self.run_dir = Path(opts.run)
        self.hash = spec_hash(spec.text, self.overrides)
        self._stop: str | None = None

    # ------------------------------------------------------------------ set-up
    def _prepare_folder(self, world) -> None:
        if not world.main:
            return
        try:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.run_dir / "samples").mkdir(exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise TrainError(f"cannot write the run folder {self.run_dir}: {e.strerror or e}") from None

    def _write_config(self, world) -> None:
        if not world.main:
            return
        cfg = {
            "spec_name": self.spec.name, "spec_file": self.spec.file, "spec_text": self.spec.text,
            "spec_hash": self.hash, "overrides": self.overrides, "train_overrides": self.train_overrides,
            "variables": self.spec.variables, "train": self.train.model_dump(), "options": asdict(self.opts),
            "versions": versions(), "world_size": world.size, "seed": self.train.seed,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        tmp = self.run_dir / "config.json.tmp"
        tmp.write_text(json.dumps(cfg, indent=2, default=str))
        tmp.replace(self.run_dir / "config.json")

    def _optimizer(self, model) -> torch.optim.Optimizer:
        cls = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamw": torch.optim.AdamW}[self.train.optimizer]
        kw = {"weight_decay": self.train.weight_decay}
        if self.train.optimizer == "adamw" and "weight_decay" not in self.train_overrides and \
                "weight_decay" not in self.spec.train.model_fields_set:
            kw = {}  # AdamW's own default decay unless the spec says otherwise
        return cls([p for p in model.parameters() if p.requires_grad], lr=self.train.lr, **kw)

    def _ema(self, model):
        if self.train.ema is None:
            return None
        from .ema import EMA
        return EMA(model, self.train.ema)

    # ------------------------------------------------------------------ the run
    def run(self) -> RunResult:
        from ..compiler.model import compile_spec
        from .data import BatchStream, batches_per_epoch, init_batch, open_dataset

        opts = self.opts
        world = D.setup(opts.device)
        clean = False
        try:
            self._prepare_folder(world)
            source = open_dataset(self.spec.data, opts.data_root, opts.download, self.train.seed)
            n_train = len(source.train)
            global_batch = self.train.batch
            if global_batch % world.size:
                raise TrainError(f"batch {global_batch} is not divisible by the world size {world.size}")
            spe = batches_per_epoch(n_train, global_batch)
            if spe < 1:
                raise TrainError(f"the training split has {n_train} items, fewer than one batch of {global_batch}")
            total = total_steps(self.train, spe)

            seed_everything(self.train.seed, world.rank)  # before the model exists: its initial weights
            model = compile_spec(self.spec).to(world.device)
            if opts.precision == "bf16":
                model.set_precision(torch.bfloat16)
            ckpt = self._existing_checkpoint(world)
            step = epoch = position = 0
            best = math.inf
            elapsed0 = 0.0
            optimizer = self._optimizer(model)
            if ckpt is not None and ckpt.get("spec_hash") == self.hash:
                load_state(model, ckpt["model"], str(self._last()))
                mark_initialized(model)
            elif ckpt is not None:  # --force onto another spec: weights where names and shapes match
                left = load_state(model, ckpt["model"], str(self._last()), force=True)
                mark_initialized(model)
                self._say(f"--force: loaded the checkpoint's weights where they fit; {len(left)} tensors kept "
                          f"their fresh values; starting at step 0")
                ckpt = None
            else:
                if world.main:
                    model.initialize(init_batch(source.train, self.train.init_batch, self.train.seed)
                                     .to(world.device))
                D.broadcast_state(model, world)
                mark_initialized(model)
            ema = self._ema(model)
            if ckpt is not None:
                optimizer.load_state_dict(ckpt["optimizer"])
                if ema is not None and ckpt.get("ema"):
                    ema.load_state_dict(ckpt["ema"])
                    mark_initialized(ema)
                step, epoch, position = ckpt["step"], ckpt["epoch"], ckpt["position"]
                best = ckpt.get("best_bpd") or math.inf
                elapsed0 = ckpt.get("elapsed", 0.0)
                if ckpt.get("world_size", 1) != world.size:
                    raise TrainError(f"the run was trained with world size {ckpt.get('world_size')}; resume it "
                                     f"with the same number of processes (got {world.size})")
                restore_rng(ckpt["rng"][world.rank])
            else:
                self._write_config(world)

            train_model = model
            if world.distributed:
                from torch.nn.parallel import DistributedDataParallel as DDP
                train_model = DDP(model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
            if opts.compile:
                model.compile_nets()

            log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=world.main)
            log.truncate_after(step)
            stream = BatchStream(source.train, batch=self.train.batch, seed=self.train.seed, rank=world.rank,
                                 world=world.size, augment=self.train.augment, workers=opts.workers,
                                 pin_memory=world.device.type == "cuda", device=world.device)
            result = self._loop(model, train_model, optimizer, ema, source, world, log, stream,
                                step=step, epoch=epoch, position=position, spe=spe, total=total, best=best,
                                elapsed0=elapsed0)
            clean = True
            return result
        finally:
            D.teardown(world, synchronize=clean)

    def _last(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def _existing_checkpoint(self, world) -> dict | None:
        last = self._last()
        if not last.exists():
            return None
        ckpt = load_checkpoint(last, map_location=world.device)
        if ckpt.get("spec_hash") != self.hash and not self.opts.force:
            raise CheckpointError(f"{last}: this run folder holds a checkpoint of another spec "
                                  f"('{ckpt.get('spec_file')}', hash {str(ckpt.get('spec_hash'))[:12]} vs "
                                  f"{self.hash[:12]}); use another --run folder, or --force to load its weights "
                                  f"where names and shapes match")
        return ckpt

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _install_signals(self):
        old = {}

        def handler(signum, frame):
            self._stop = signal.Signals(signum).name

        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                old[s] = signal.signal(s, handler)
            except ValueError:  # not the main thread (e.g. a test runner's worker thread)
                pass
        return old

    # ------------------------------------------------------------------ loop
    def _loop(self, model, train_model, optimizer, ema, source, world, log, stream, *, step, epoch,
              position, spe, total, best, elapsed0) -> RunResult:
        opts, train = self.opts, self.train
        dims = self.spec.data.dims
        params = [p for p in model.parameters() if p.requires_grad]
        clip = train.clip
        eval_every = opts.eval_every or max(spe, -(-total // 10))  # an epoch, and at most ~10 times a run
        old_handlers = self._install_signals()
        bad = 0
        last_good = str(self._last()) if self._last().exists() else None
        window_loss, window_n, window_t0, window_images = 0.0, 0, time.perf_counter(), 0
        t_start = time.perf_counter()
        result = RunResult(str(self.run_dir), step, epoch, "done")
        last_train_bpd = last_test = None
        ips = None
        stopped = None
        try:
            while step < total and stopped is None:
                for x in stream.epoch(epoch, start=position):
                    if step >= total:
                        break
                    lr = lr_at(train, step, spe)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    if not model.training:
                        model.train()
                    loss = -train_model(x).mean()
                    if _fault(step) == "nan":
                        loss = loss * float("nan")
                    gnorm = backward_and_clip(loss, optimizer, params, clip)
                    stats = D.all_mean(torch.stack([loss.detach().float(), gnorm.detach().float()]), world)
                    loss_v, gnorm_v = (float(v) for v in stats.tolist())
                    finite = math.isfinite(loss_v) and math.isfinite(gnorm_v)
                    if finite:
                        optimizer.step()
                        if ema is not None:
                            ema.update(model)
                        bad = 0
                        if _fault(step) == "poison":
                            with torch.no_grad():
                                params[0].fill_(float("nan"))
                    else:
                        bad += 1
                        self._say(f"step {step}: non-finite {'loss' if not math.isfinite(loss_v) else 'gradient'} "
                                  f"({loss_v:.4g}, grad norm {gnorm_v:.4g}); update skipped ({bad} in a row)")
                    step += 1
                    position += 1
                    if position >= spe:
                        epoch, position = epoch + 1, 0
                    if finite:
                        window_loss += loss_v
                        window_n += 1
                    window_images += train.batch
                    if step % opts.log_every == 0 or step == total:
                        now = time.perf_counter()
                        ips = window_images / max(now - window_t0, 1e-9)
                        if window_n:
                            mean = window_loss / window_n
                            last_train_bpd = mean / (dims * LN2)
                            log.write({"step": step, "epoch": epoch, "loss": mean, "bpd": last_train_bpd, "lr": lr,
                                       "grad_norm": gnorm_v, "images_per_s": ips,
                                       "time": elapsed0 + now - t_start})
                        window_loss, window_n, window_t0, window_images = 0.0, 0, now, 0
                    if self.on_progress is not None:
                        self.on_progress(step=step, total=total, loss=loss_v, bpd=loss_v / (dims * LN2), ips=ips)
                    if _fault(step) == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    if bad >= opts.max_bad_steps:
                        stopped = "bad steps"
                        break
                    if step % eval_every == 0 or step == total:
                        last_test = self._evaluate(model, ema, source, world, log, step)
                        if last_test is not None and last_test < best:
                            best = last_test
                            self._checkpoint(model, optimizer, ema, world, step, epoch, position, best,
                                             elapsed0 + time.perf_counter() - t_start, also_best=True)
                            last_good = str(self._last())
                    signalled = D.any_rank(self._stop is not None, world)
                    if step % opts.checkpoint_every == 0 or step == total or signalled:
                        if self._checkpoint(model, optimizer, ema, world, step, epoch, position, best,
                                            elapsed0 + time.perf_counter() - t_start):
                            last_good = str(self._last())
                    if signalled:
                        stopped = f"signal {self._stop or 'on another rank'}"
                        break
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
        result.step, result.epoch = step, epoch
        result.stopped = stopped or "done"
        result.train_bpd, result.test_bpd = last_train_bpd, last_test
        result.best_bpd = best if math.isfinite(best) else None
        result.images_per_s = ips
        result.seconds = elapsed0 + time.perf_counter() - t_start
        result.checkpoint = last_good
        result.bad_steps = bad
        if world.distributed:
            result.extra["max_rank_divergence"] = _rank_divergence(model, world)
        if world.main and (self.run_dir / "metrics.jsonl").exists():
            try:
                plot_curves(log.rows(), self.run_dir / "curves.png", self.spec.name)
            except Exception as e:  # a plot is never worth a lost run
                self._say(f"warning: could not draw curves.png: {e}")
        return result

    # ------------------------------------------------------------------ checkpoints, evaluation
    def _checkpoint(self, model, optimizer, ema, world, step, epoch, position, best, elapsed,
                    also_best: bool = False) -> bool:
        """Write last.pt (and best.pt) from rank 0; refuse to write a model with non-finite weights."""
        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
        rngs = D.gather_objects(capture_rng(), world)
        if not finite:
            self._say(f"step {step}: the model has non-finite weights; checkpoint NOT written "
                      f"(the last good one is kept)")
            return False
        if world.main:
            state = {"spec_text": self.spec.text, "spec_file": self.spec.file, "spec_hash": self.hash,
                     "overrides": self.overrides, "train_overrides": self.train_overrides,
                     "model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                     "optimizer": optimizer.state_dict(), "step": step, "epoch": epoch, "position": position,
                     "rng": rngs, "train": self.train.model_dump(), "best_bpd": best if math.isfinite(best) else None,
                     "world_size": world.size, "versions": versions(), "elapsed": elapsed}
            save_checkpoint(self._last(), state)
            if also_best:
                save_checkpoint(self.run_dir / "checkpoints" / "best.pt", state)
        D.barrier(world)
        return True

    def _evaluate(self, model, ema, source, world, log, step) -> float | None:
        """One-sample ELBO bits/dim on a fixed subset of the test split (EMA weights when kept) and a
        sample grid; under its own RNG so the training noise stream is unchanged."""
        if not world.main:
            return D.broadcast_float(None, world)  # rank 0's figure, so that every rank takes the same branch
        from .scoring import evaluate
        from .sampling import save_samples

        net = ema.module if ema is not None else model
        n = min(self.opts.eval_images, len(source.test))
        idx = torch.randperm(len(source.test), generator=torch.Generator().manual_seed(self.train.seed))[:n]
        data = torch.stack([source.test[int(i)] for i in idx])
        res = evaluate(net, data, samples=1, batch=self.train.batch, seed=self.train.seed + 7919 * step)
        bpd = float(res.elbo_bpd)
        log.write({"step": step, "split": "test", "bpd": bpd, "samples": 1, "images": n})
        devices = [world.device] if world.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.train.seed + 7919 * step)
            try:
                save_samples(net, self.run_dir / "samples" / f"step-{step}.png", n=self.opts.sample_n)
            except Exception as e:  # a picture is never worth a lost run
                self._say(f"warning: could not write samples at step {step}: {e}")
        return D.broadcast_float(bpd, world)


def _rank_divergence(model, world) -> float:
    """The largest |p - p_rank0| over every parameter: 0 when DDP kept the replicas identical."""
    worst = torch.zeros((), device=world.device)
    for p in model.parameters():
        ref = p.detach().clone()
        torch.distributed.broadcast(ref, src=0)
        worst = torch.maximum(worst, (p.detach() - ref).abs().max())
    torch.distributed.all_reduce(worst, op=torch.distributed.ReduceOp.MAX)
    return float(worst)




__all__ = ["RunResult", "TrainError", "TrainOptions", "Trainer", "capture_rng", "restore_rng"]
