"""One optimiser update: the plan's batches, their losses, the gradient combination, the step."""
from __future__ import annotations

import dataclasses

import torch

from mtlib import seeds
from mtlib.config import Config, TrainConfig
from mtlib.model.multitask import MultitaskModel
from mtlib.training.combiners import build_combiner
from mtlib.training.gradients import param_segments, point_grads
from mtlib.training.precision import autocast
from mtlib.training.smart import Smart
from mtlib.training.plans import PLANS, PlanContext, updates_per_epoch


def adamw(model: torch.nn.Module, t: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, fused where torch has the kernel (CPU and CUDA).

    Fused AdamW updates every parameter in one kernel. On a CPU torch's default is a Python
    loop over the tensors: fused made a MiniLM training step 1.13x faster at one thread and
    1.23x at two on a 2-core EPYC (benchmarks/bench_step.py). On a GPU it saves launches
    and, under fp16, a host-device sync (the GradScaler's inf check happens inside the
    kernel). Same batch plan: it matches the loop to float rounding (tests/test_stepper.py)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, fused=fused or None)


class Stepper:
    """One optimiser update: draw the plan's batches, backpropagate each weighted loss
    (plus SMART's terms when on), combine per-task gradients of the SHARED parameters when
    the combiner needs them apart, and step (through the GradScaler under fp16).

    Per-task gradients are collected batch by batch into a (tasks x params) matrix: before
    each backward the shared parameters' ``.grad`` are pointed at their task's row, so
    autograd accumulates there directly; the combined gradient goes into one more (params,)
    buffer, which the ``.grad`` then view. Both buffers live for the whole run: tasks + 1
    gradient copies, no per-batch copies, and no autograd graph outlives its batch.
    Heads and PALs are task-specific: they keep their own task's gradient untouched.
    """

    def __init__(self, cfg: Config, model: MultitaskModel, optimizer, scaler, streams, sampler,
                 sizes: dict[str, int], device: torch.device, amp: str, total: int | None = None):
        t, methods = cfg.train, cfg.methods
        self.t, self.model, self.optimizer, self.scaler = t, model, optimizer, scaler
        self.streams, self.sampler, self.sizes, self.device, self.amp = streams, sampler, sizes, device, amp
        self.plan, self.apart = PLANS[t.plan], methods.combiner.needs_task_gradients
        self.combiner = build_combiner(methods.combiner)
        named = [(n, p) for n, p in model.encoder.named_parameters() if p.requires_grad]
        self.shared = [p for _, p in named]
        self.segments = param_segments(named, methods.per_layer)
        self.task_index = {task: i for i, task in enumerate(t.tasks)}
        self.combiner_state = self.combiner.init_state(len(t.tasks), len(self.segments))
        total = t.epochs * updates_per_epoch(t) if total is None else total  # the run's updates
        smart = methods.smart
        self.smart = Smart(model, dataclasses.replace(smart, total_steps=smart.total_steps or total)) if smart else None
        self.batch_counts: dict[str, int] = {}
        self.counts_epoch = 0
        self.grads: torch.Tensor | None = None     # (tasks, params), when the combiner needs them apart
        self.combined: torch.Tensor | None = None  # (params,)

    def loss(self, batch) -> torch.Tensor:
        output = self.model(batch)
        loss = self.model.loss(batch, output)
        if self.smart is not None:
            loss = self.smart.regularised_loss(self.model, batch, output, loss)
        return loss

    def step(self, update: int, epoch: int) -> tuple[int, int]:
        """Run update number ``update``; returns (examples, real tokens) consumed."""
        if epoch != self.counts_epoch:
            self.batch_counts, self.counts_epoch = {}, epoch
        generator = seeds.generator(seeds.counter_seed(self.t.seed, update))
        ctx = PlanContext(self.sampler, epoch, self.t.epochs, self.sizes, self.t.accumulation, self.t.group_size,
                          generator, self.batch_counts)
        if self.apart:
            self._zero_task_gradients()
        examples, tokens = self._backward(self.plan(ctx), self.apart)
        if self.apart:
            self._combine(generator)
        if self.t.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.smart is not None:
            self.smart.update_ema(self.model)
        return examples, tokens

    def _zero_task_gradients(self) -> None:
        if self.grads is None:  # one (tasks x params) buffer for the whole run
            size = sum(p.numel() for p in self.shared)
            self.grads = torch.zeros(len(self.t.tasks), size, device=self.device)
            self.combined = torch.zeros(size, device=self.device)
        self.grads.zero_()

    def _backward(self, plan: list[tuple[str, float]], apart: bool) -> tuple[int, int]:
        examples = tokens = 0
        for task, weight in plan:
            batch = self.streams[task].next()
            examples, tokens = examples + len(batch), tokens + batch.real_tokens()  # on the CPU: no device sync
            batch = batch.to(self.device)
            if apart:  # this backward accumulates into the task's row
                point_grads(self.shared, self.grads[self.task_index[task]])
            with autocast(self.amp, self.device):
                loss = self.loss(batch) * weight
            self.scaler.scale(loss).backward()
        return examples, tokens

    def _combine(self, generator: torch.Generator) -> None:
        """Combine UNSCALED task gradients; re-scale so the scaler's inf/nan check still applies."""
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        if scale != 1.0:
            self.grads.mul_(1.0 / scale)
        combined, self.combiner_state = self.combiner.combine(self.grads, self.combiner_state, generator,
                                                              self.segments, out=self.combined)
        point_grads(self.shared, combined.mul_(scale) if scale != 1.0 else combined)

    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """JSON-able state (its own, the sampler's, the scaler's, the streams') and tensors,
        for the checkpoint."""
        tensors = {f"combiner.{k}": v for k, v in self.combiner_state.items()}
        if self.smart is not None:
            tensors.update({f"smart.{k}": v for k, v in self.smart.state_dict().items()})
        return {"sampler": self.sampler.state_dict(), "scaler": self.scaler.state_dict(),
                "streams": {k: s.state_dict() for k, s in self.streams.items()},
                "stepper": {"batch_counts": self.batch_counts, "counts_epoch": self.counts_epoch}}, tensors

    def load_state(self, saved: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.sampler.load_state_dict(saved["sampler"])
        for task, stream in self.streams.items():
            stream.load_state_dict(saved["streams"][task])
        self.scaler.load_state_dict(saved["scaler"])
        state = saved["stepper"]
        self.batch_counts, self.counts_epoch = dict(state["batch_counts"]), int(state["counts_epoch"])
        self.combiner_state = {k[len("combiner."):]: v.to(self.device) for k, v in tensors.items()
                               if k.startswith("combiner.")}
        if self.smart is not None:
            self.smart.load_state_dict({k[len("smart."):]: v for k, v in tensors.items() if k.startswith("smart.")})
