"""The training loop: one device or many, resumable to the bit, never losing the last good checkpoint.

The run folder and options are runtime.run_folder's; the generators' state runtime.rng's; the
parts of one update (clipping, the per-update hooks) runtime.step's; checkpoints are model files
of kind "trained" (augflow_dsl.compiler.model_file).

What makes a resumed run log the same losses, bit for bit, as one never stopped: the checkpoint
holds the model, optimizer, EMA, step, epoch and position in the epoch, and every generator's
state (torch CPU and CUDA, numpy, python; one entry per rank); the data order and augmentation are
functions of (seed, epoch, position) only (runtime.data); every noise draw of a step is a function of
(seed, step, global example index) (runtime.noise), so 1 and K processes log the same curve; the
learning rate is a function of the step only (runtime.schedule); evaluation and sampling run under
``torch.random.fork_rng`` with their own seed, so how often a run evaluates never shifts the training
noise.

A step whose loss or gradient norm is not finite is reported and skipped: its update is never
applied (no optimizer step, no EMA update). ``max_bad_steps`` skipped steps in a row stop the run,
naming the last good checkpoint; a checkpoint is written only from a model whose parameters are
all finite, so a bad state never replaces a good one. Divergence through finite values counts as
bad too (runtime.divergence: a loss above its running median by the rule there is a skipped step,
and weights whose loss on the step's batch breaks the rule are never checkpointed: the run stops).

A resume checks the run's train settings against the checkpoint's and records the command-line
changes it may make (lr, clip, warmup, steps) in config.json (runtime.resume_checks); it sets the
run's recorded torch thread count, and the checkpoint holds the logging window's running sums and
the divergence window, so the log after a resume is the same, bit for bit.
"""
from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import batches
from . import distributed as D
from ..compiler.model_file import ModelFileError, load_state, read_model_file, spec_hash
from .metrics import MetricsLog, plot_curves
from .noise import example_noise
from .tensorboard import open_tensorboard
from .rng import capture_rng, restore_rng, seed_everything
from .run_folder import RunFolder, RunResult, TrainError, TrainOptions, check_resume, versions
from .schedule import lr_at, total_steps
from .step import TrainHooks, all_finite, backward_and_clip, mark_initialized, rank_divergence
from .divergence import DivergenceGuard, check_loss
from .resume_checks import changed_keys, past_length, record_change, recorded_changes, refuse_mismatch

LN2 = math.log(2)


# ----------------------------------------------------------------------------- the trainer
class Trainer:
    """Trains one compiled spec in one run folder (``run()``); rank 0 alone writes files."""

    def __init__(self, spec, overrides: dict[str, Any], train_overrides: dict[str, Any], opts: TrainOptions,
                 console=None, on_progress: Callable | None = None, resume_from: dict | None = None,
                 hooks: TrainHooks | None = None, analysis=None, changes: dict | None = None):
        """``changes``: a resume's command-line changes (runtime.launch.TrainSetup.changes), checked
        against the checkpoint and recorded in config.json.

        ``analysis``: the spec's :class:`~augflow_dsl.graph.pipeline.Analysis` when the caller
        has already checked it (its graph is compiled as it is); else :meth:`run` analyses ``spec``."""
        self.analysis = analysis
        self.spec, self.overrides, self.train_overrides, self.opts = spec, dict(overrides), dict(train_overrides), opts
        try:
            self.train = spec.train.merged(train_overrides, batch=opts.batch, steps=opts.steps, epochs=opts.epochs,
                                           seed=opts.seed)
        except ValueError as e:  # an unknown or ill-typed train.* key
            raise TrainError(f"train settings: {e}") from None
        self.console = console
        self.on_progress = on_progress
        self.run_dir = Path(opts.run)
        self.folder = RunFolder(self.run_dir)
        self.hooks = hooks if hooks is not None else TrainHooks()
        self.hash = spec_hash(spec.text, self.overrides)
        self._stop: str | None = None
        self.changes = changes or {}
        self.guard = DivergenceGuard(spec.data.dims, opts.diverge_factor)
        self.window = [0.0, 0, 0]  # the logging window's loss sum, finite steps, images (checkpointed)
        self.diverged: dict | None = None

    # ------------------------------------------------------------------ set-up
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
        return EMA(model, self.train.ema, warmup=self.train.ema_warmup)

    # ------------------------------------------------------------------ the run
    def run(self) -> RunResult:
        from ..compiler.model import build_model, compile_spec
        from ..language.datasets import spec_condition
        from .data import BatchStream, batches_per_epoch, init_batch, open_dataset

        opts = self.opts
        world = D.setup(opts.device)
        clean = False
        threads0 = torch.get_num_threads()
        if opts.threads is None:
            opts.threads = threads0  # recorded in config.json; a resume sets it again
        torch.set_num_threads(opts.threads)
        try:
            self.folder.prepare_ranks(world, self._say)  # rank 0 locks and probes the folder; all ranks learn it
            source = open_dataset(self.spec.data, opts.data_root, opts.download, self.train.seed,
                                  **spec_condition(self.spec))
            n_train = len(source.train)
            global_batch = self.train.batch
            if global_batch % world.size:
                raise TrainError(f"batch {global_batch} is not divisible by the world size {world.size}")
            spe = batches_per_epoch(n_train, global_batch)
            if spe < 1:
                raise TrainError(f"the training split has {n_train} items, fewer than one batch of {global_batch}")
            total = total_steps(self.train, spe)

            seed_everything(self.train.seed, world.rank)  # before the model exists: its initial weights
            a = self.analysis
            model = (build_model(a.spec, a.graph) if a is not None and a.spec is self.spec
                     else compile_spec(self.spec)).to(world.device)
            if opts.precision == "bf16":
                model.set_precision(torch.bfloat16)
            ckpt = self._existing_checkpoint(world)
            check_resume(ckpt, self._last(), spe, self.hash)  # fields, position, finite weights (issue 24)
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
                    x0, y0 = batches.split(batches.to(init_batch(source.train, self.train.init_batch,
                                                                   self.train.seed), world.device))
                    model.initialize(x0, y0 if model.conditional else None)
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
                self.guard.load_state_dict(ckpt.get("guard"))
                self.window = list(ckpt.get("window") or [0.0, 0, 0])
                self._resume_checks(ckpt, total, world)
            else:
                if world.main:
                    self.folder.write_config(self.spec, self.hash, self.overrides, self.train_overrides, self.train,
                                             opts, world.size)

            train_model = model
            if world.distributed:
                from torch.nn.parallel import DistributedDataParallel as DDP
                train_model = DDP(model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
            if opts.compile:
                model.compile_nets()

            log = MetricsLog(self.folder.metrics, enabled=world.main,
                             tensorboard=open_tensorboard(self.run_dir, world.main and opts.tensorboard, step,
                                                          self.spec, model, self.analysis))
            log.truncate_after(step)
            stream = BatchStream(source.train, batch=self.train.batch, seed=self.train.seed, rank=world.rank,
                                 world=world.size, augment=self.train.augment, workers=opts.workers,
                                 pin_memory=world.device.type == "cuda", device=world.device)
            result = self._loop(model, train_model, optimizer, ema, source, world, log, stream,
                                step=step, epoch=epoch, position=position, spe=spe, total=total, best=best,
                                elapsed0=elapsed0)
            log.close()
            clean = True
            return result
        finally:
            self.folder.release()  # the run-folder lock
            if not clean and world.main:
                self.folder.discard_if_unused()  # a run refused before writing anything leaves no folder
            D.teardown(world, synchronize=clean)
            torch.set_num_threads(threads0)

    def _resume_checks(self, ckpt: dict, total: int, world) -> None:
        """Refuse train settings that differ from the checkpoint's except by a command-line or
        recorded change (issue 24, item 7), and a length at or before the run's step (item 10);
        record this resume's changes in config.json."""
        step = ckpt["step"]
        allowed = changed_keys(self.changes)
        for c in recorded_changes(self.run_dir):
            if c.get("step", -1) >= step:  # recorded after this checkpoint was written
                allowed |= changed_keys(c)
        if isinstance(ckpt.get("train"), dict):
            refuse_mismatch(ckpt["train"], self.train.model_dump(), allowed, self.run_dir)
        if step > total:
            raise TrainError(past_length(self.run_dir, step, total))
        if step == total:
            self._say(past_length(self.run_dir, step, total))
        if self.changes and world.main:
            record_change(self.run_dir, step, self.changes)

    def _last(self) -> Path:
        return self.folder.last

    def _existing_checkpoint(self, world) -> dict | None:
        last = self._last()
        if not last.exists():
            return None
        ckpt = read_model_file(last, map_location=world.device)
        if ckpt.get("spec_hash") != self.hash and not self.opts.force:
            raise ModelFileError(f"{last}: this run folder holds a checkpoint of another spec "
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
        win, window_t0, guard = self.window, time.perf_counter(), self.guard
        t_start = time.perf_counter()
        result = RunResult(str(self.run_dir), step, epoch, "done")
        last_train_bpd = last_test = final_iw = None
        step0 = step
        ips = None
        stopped = None
        try:
            while step < total and stopped is None:
                for batch in stream.epoch(epoch, start=position):
                    x, y = batches.split(batch)
                    if step >= total:
                        break
                    lr = lr_at(train, step, spe)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    if not model.training:
                        model.train()
                    with example_noise(train.seed, step, world.rank, world.size, train.batch):
                        loss = -batches.score(train_model, x, y).mean()
                    loss = self.hooks.loss(step, loss)
                    gnorm = backward_and_clip(loss, optimizer, params, clip)
                    stats = D.all_mean(torch.stack([loss.detach().float(), gnorm.detach().float()]), world)
                    loss_v, gnorm_v = (float(v) for v in stats.tolist())
                    finite = math.isfinite(loss_v) and math.isfinite(gnorm_v)
                    spike = finite and guard.observe(loss_v)
                    if finite and not spike:
                        optimizer.step()
                        if ema is not None:
                            ema.update(model)
                        bad = 0
                        self.hooks.after_update(step, model, params)
                    elif spike:
                        bad += 1
                        self.diverged = {"step": step + 1, "loss": loss_v, "rule": guard.verdict(loss_v)}
                        self._say(f"step {step + 1}: diverged, {guard.verdict(loss_v)}; update skipped ({bad} in a row)")
                    else:
                        bad += 1
                        self.diverged = None
                        self._say(f"step {step}: non-finite {'loss' if not math.isfinite(loss_v) else 'gradient'} "
                                  f"({loss_v:.4g}, grad norm {gnorm_v:.4g}); update skipped ({bad} in a row)")
                    step += 1
                    position += 1
                    if position >= spe:
                        epoch, position = epoch + 1, 0
                    if finite:
                        win[0] += loss_v
                        win[1] += 1
                    win[2] += train.batch
                    if step % opts.log_every == 0 or step == total:
                        now = time.perf_counter()
                        ips = win[2] / max(now - window_t0, 1e-9)
                        if win[1]:
                            mean = win[0] / win[1]
                            last_train_bpd = mean / (dims * LN2)
                            log.write({"step": step, "epoch": epoch, "loss": mean, "bpd": last_train_bpd, "lr": lr,
                                       "grad_norm": gnorm_v, "images_per_s": ips,
                                       "time": elapsed0 + now - t_start})
                        win[:], window_t0 = [0.0, 0, 0], now
                    if self.on_progress is not None:
                        self.on_progress(step=step, total=total, loss=loss_v, bpd=loss_v / (dims * LN2), ips=ips)
                    self.hooks.after_step(step)
                    if bad >= opts.max_bad_steps:
                        stopped = "bad steps"
                        break
                    if step % eval_every == 0 or step == total:
                        last_test = self._evaluate(model, ema, source, world, log, step)
                        if step == total and train.eval_samples > 1 and opts.final_eval:
                            final_iw = self._evaluate(model, ema, source, world, log, step, train.eval_samples)
                        if last_test is not None and last_test < best:
                            best = last_test
                            if self._checkpoint(model, optimizer, ema, source, world, step, epoch, position, best,
                                                elapsed0 + time.perf_counter() - t_start, also_best=True, xy=(x, y)):
                                last_good = str(self._last())
                    signalled = D.any_rank(self._stop is not None, world)
                    if step % opts.checkpoint_every == 0 or step == total or signalled:
                        if self._checkpoint(model, optimizer, ema, source, world, step, epoch, position, best,
                                            elapsed0 + time.perf_counter() - t_start, xy=(x, y)):
                            last_good = str(self._last())
                    if self.diverged is not None and self.diverged.get("at_checkpoint"):
                        stopped = "bad steps"
                        break
                    if signalled:
                        stopped = f"signal {self._stop or 'on another rank'}"
                        break
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
        result.step, result.epoch = step, epoch
        result.stopped = stopped or "done"
        result.train_bpd, result.test_bpd = last_train_bpd, last_test
        result.test_iw_bpd = final_iw if step > step0 else None
        result.best_bpd = best if math.isfinite(best) else None
        result.images_per_s = ips
        result.seconds = elapsed0 + time.perf_counter() - t_start
        result.checkpoint = last_good
        result.bad_steps = bad
        if stopped == "bad steps" and self.diverged is not None:
            result.extra["diverged"] = self.diverged
        if world.distributed:
            result.extra["max_rank_divergence"] = rank_divergence(model, world)
        if world.main and self.folder.metrics.exists():
            try:
                plot_curves(log.rows(), self.run_dir / "curves.png", self.spec.name)
            except Exception as e:  # a plot is never worth a lost run
                self._say(f"warning: could not draw curves.png: {e}")
        return result

    # ------------------------------------------------------------------ checkpoints, evaluation
    def _checkpoint(self, model, optimizer, ema, source, world, step, epoch, position, best, elapsed,
                    also_best: bool = False, xy=None) -> bool:
        """Write last.pt (and best.pt) from rank 0; refuse to write a model with non-finite weights,
        or one whose loss on the step's batch ``xy`` is diverged (runtime.divergence)."""
        finite = all_finite(model)
        if finite and xy is not None and self.guard.history:
            with example_noise(self.train.seed, step, world.rank, world.size, self.train.batch, "check"):
                loss = check_loss(model, *xy, world)
            if math.isfinite(loss) and self.guard.diverged(loss):  # a non-finite one is a skipped step's case
                rule = self.guard.verdict(loss)
                self.diverged = {"step": step, "loss": loss, "rule": rule, "at_checkpoint": True}
                self._say(f"step {step}: the weights to checkpoint are diverged, {rule}; checkpoint NOT written "
                          f"(the last good one is kept)")
                return False
        rngs = D.gather_objects(capture_rng(), world)
        if not finite:
            self._say(f"step {step}: the model has non-finite weights; checkpoint NOT written "
                      f"(the last good one is kept)")
            return False
        if world.main:
            self._ema_statistics(ema, source, world, step)
            state = {"spec_text": self.spec.text, "spec_file": self.spec.file, "spec_hash": self.hash,
                     "overrides": self.overrides, "train_overrides": self.train_overrides,
                     "model": model.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                     "optimizer": optimizer.state_dict(), "step": step, "epoch": epoch, "position": position,
                     "rng": rngs, "train": self.train.model_dump(), "best_bpd": best if math.isfinite(best) else None,
                     "world_size": world.size, "elapsed": elapsed, "guard": self.guard.state_dict(),
                     "window": list(self.window)}
            self.folder.save_checkpoint(state, also_best)  # an OSError (full disk) becomes WriteFailed
        D.barrier(world)
        return True

    def _ema_statistics(self, ema, source, world, step: int) -> None:
        """Measure the EMA model's BatchNorm statistics for its own weights (runtime.ema) before it is
        evaluated, sampled or checkpointed: ``train.ema_bn_batches`` batches of the training split,
        drawn from (seed, step), scored with per-example noise of purpose "bn" (so the run's own noise
        and generators are untouched and a resume recomputes the same figures); without augmentation.
        Once per step; rank 0 (which alone evaluates and writes) only."""
        from .ema import has_batchnorm, recompute_batchnorm
        from .data import derive_seed

        k = self.train.ema_bn_batches
        if ema is None or k == 0 or not world.main or ema.bn_step == step or not has_batchnorm(ema.module):
            return
        b = self.train.batch
        n = min(k * b, len(source.train) // b * b)
        order = torch.randperm(len(source.train), generator=torch.Generator().manual_seed(
            derive_seed(self.train.seed, "ema-bn", step)))[:n]
        seed = self.train.seed

        def chunks():  # (k, the k-th batch): k names the batch's noise
            for k, i in enumerate(range(0, n, b)):
                yield k, batches.to(batches.stack([source.train[int(j)] for j in order[i:i + b]]), world.device)

        def score(module, item):
            k, (x, y) = item[0], batches.split(item[1])
            with example_noise(seed, step, 0, 1, x.shape[0], purpose=f"bn-{k}"):
                return batches.score(module, x, y)
        recompute_batchnorm(ema.module, chunks(), score)
        ema.bn_step = step

    def _evaluate(self, model, ema, source, world, log, step, samples: int = 1) -> float | None:
        """Bits/dim on a fixed subset of the test split (EMA weights when kept) and, for the periodic
        one-sample ELBO, a sample grid; under its own RNG so the training noise stream is unchanged.
        ``samples`` > 1 (the run's last step, ``train.eval_samples``): the importance-weighted
        figure, logged as its own row; it picks no checkpoint."""
        if not world.main:
            return D.broadcast_float(None, world)  # rank 0's figure, so that every rank takes the same branch
        self._ema_statistics(ema, source, world, step)
        from .scoring import evaluate
        from .sampling import save_samples

        net = ema.module if ema is not None else model
        n = min(self.opts.eval_images, len(source.test))
        idx = torch.randperm(len(source.test), generator=torch.Generator().manual_seed(self.train.seed))[:n]
        data = batches.stack([source.test[int(i)] for i in idx])
        seed = self.train.seed + 7919 * step
        row = {"step": step, "split": "test", "samples": samples, "images": n}
        if ema is not None and self.opts.eval_raw:  # the same images and noise, the live weights; logged first
            raw = evaluate(model, data, samples=samples, batch=self.train.batch, seed=seed)
            log.write({**row, "bpd": float(raw.elbo_bpd if samples == 1 else raw.iw_bpd), "weights": "raw",
                       "alongside": "ema"})
        res = evaluate(net, data, samples=samples, batch=self.train.batch, seed=seed)
        bpd = float(res.elbo_bpd if samples == 1 else res.iw_bpd)
        log.write({**row, "bpd": bpd, "weights": "ema" if ema is not None else "raw"})
        if samples > 1:
            return D.broadcast_float(bpd, world)
        devices = [world.device] if world.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.train.seed + 7919 * step)
            try:
                save_samples(net, self.folder.samples(step), n=self.opts.sample_n)
                log.image(step, self.folder.samples(step))
            except Exception as e:  # a picture is never worth a lost run
                self._say(f"warning: could not write samples at step {step}: {e}")
        return D.broadcast_float(bpd, world)


__all__ = ["RunResult", "TrainError", "TrainHooks", "TrainOptions", "Trainer", "backward_and_clip", "capture_rng",
           "mark_initialized", "restore_rng", "seed_everything", "versions"]
