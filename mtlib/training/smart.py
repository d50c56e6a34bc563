"""SMART: smoothness-inducing adversarial regularisation and Bregman proximal point optimisation.

Jiang, He, Chen, Liu, Gao and Zhao 2020, "SMART: Robust and Efficient Fine-Tuning for
Pre-trained Natural Language Models through Principled Regularized Optimization", ACL.
One update minimises (Section 3, equations 1-5)

    F(theta) = L(theta) + lambda_s R_s(theta) + mu D_Breg(theta, theta~)

- R_s(theta) = 1/n sum_i max_{||x~_i - x_i||_inf <= eps} l_s(f(x~_i; theta), f(x_i; theta)),
  x_i the input word embeddings of example i (Section 3.1, equation 3);
- D_Breg(theta, theta~) = 1/n sum_i l_s(f(x_i; theta), f(x_i; theta~)) (Section 3.2), with
  theta~ the momentum ("mean teacher") copy theta~ <- (1 - beta) theta + beta theta~ after
  every optimiser update (Algorithm 1, line 14; equation 5);
- l_s the symmetric KL divergence D_KL(P||Q) + D_KL(Q||P) for classification (sst: softmax
  over 5 classes, para: a Bernoulli from the logit) and the squared error (p - q)^2 for
  regression (sts) (Section 3.1).

The inner maximisation follows Algorithm 1 (lines 6-10): x~ = x + nu, nu ~ N(0, sigma^2 I),
then T~x steps x~ <- Proj_{||x~ - x||_inf <= eps}(x~ + eta g / ||g||_inf) with g the gradient
of l_s(f(x~), f(x)) in x~, the clean output held fixed.

Defaults (Section 4.1, "Implementation Details", and Algorithm 1): eps = 1e-5, sigma = 1e-5
(``noise_std``), eta = 1e-3 (``step_size``), T~x = 1 (``steps``), mu = 1, lambda_s in {1, 3, 5}
(1 here), beta = 0.99 for the first 10% of the updates and 0.999 after (following Tarvainen
and Valpola 2017); without ``total_steps`` beta stays 0.99. S = 1 (one update per outer
iteration): every optimiser step is one proximal step.

Choices the paper leaves open, made here:

- **Norms.** The ball is an L-inf ball; the projection is an element-wise clamp of the
  perturbation delta = x~ - x to [-eps, eps], which is the same per token, per example or
  per batch. The ascent direction is normalised by the L-inf norm of each token's gradient
  (the last axis), so every token moves by at most eta per element whatever its gradient's
  scale. Padding positions are never perturbed (they are masked out anyway).
- **Gradient of R_s.** By Danskin's theorem the perturbation is a constant (detached) and
  l_s(f(x + delta; theta), f(x; theta)) is differentiated in theta through BOTH outputs, the
  word-embedding matrix included (x is recomputed with gradients). The clean output is
  the caller's ``output``, so it is not computed twice.
- **Dropout.** Nothing changes the model's mode: in train mode every forward (the caller's
  clean one, each ascent step, the final perturbed one, the teacher's) draws its own
  dropout masks (the paper also computes both outputs in train mode), so R_s also carries a
  dropout-consistency part, and at eps = 1e-5 that part dominates (on the tiny test BERT,
  fp32: ~6e-2 from dropout against ~3e-7 from the perturbation alone); deterministic
  dropout is not attempted. The teacher runs in the model's mode.
- **Teacher storage.** theta~ is a dict of tensors (one detached copy of every parameter,
  trainable or not, so a phase that unfreezes the encoder still has its teacher); the
  teacher forward is ``torch.func.functional_call`` of the live model with these tensors,
  so there is no second module, no hook is duplicated (PALs route as usual) and buffers are
  the model's own. Memory: one parameter copy, no gradients, no optimiser state.
- **Precision.** Divergences are computed in fp32 and delta is kept in fp32. Under bf16 or
  fp16 autocast a perturbation of 1e-5 is below the activations' resolution (bf16 keeps 8
  bits: x + 1e-5 rounds back to x for any |x| > ~2.6e-3), so computed there R_s would be the
  dropout-consistency term plus rounding, and in fp16 a tiny divergence can underflow the
  ascent gradient to zero. With ``precision="fp32"`` (the default) R_s is computed where
  the perturbation is representable: autocast is switched off for the ascent, the clean
  and the perturbed forwards of R_s (one more forward than under ``"amp"``, which uses the
  caller's output and autocast as the report's runs did). The task loss and D_Breg stay in
  the caller's precision. Without autocast the two are the same computation.
- **Randomness.** The noise nu comes from ``generator`` when one is given (its state is in
  :meth:`Smart.state_dict`), else from the global torch RNG, which the trainer checkpoints.

Cost per batch, beyond the plain task loss (one forward, one backward): ``steps`` extra
forwards each with a backward to the input only (the ascent; no weight gradients), one
extra forward with gradients (the perturbed output; its backward is part of the caller's
backward, which roughly doubles), one extra forward without gradients (the teacher). With
the defaults (steps = 1): 3 extra forwards (4x) and about 2.5x the backward work; about
2.5-3x the time of a plain step. Memory: two live autograd graphs instead of one.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from mtlib.data.encode import Batch
from mtlib.settings import SmartSettings

def symmetric_kl_categorical(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(P||Q) + KL(Q||P), P = softmax(p), Q = softmax(q); p, q (B, C).

    sum_c (P_c - Q_c)(log P_c - log Q_c), and log P - log Q = p - q up to a constant that
    sum_c (P_c - Q_c) = 0 removes: (P - Q) . (p - q), free of logs of small probabilities.
    """
    p, q = p.float(), q.float()
    return ((p.softmax(-1) - q.softmax(-1)) * (p - q)).sum(-1).mean()


def symmetric_kl_bernoulli(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(P||Q) + KL(Q||P) for Bernoullis with logits a, b (B,).

    (p - q)(log p - log q) + (q - p)(log(1-p) - log(1-q)) = (p - q)(logit p - logit q)
    = (sigmoid(a) - sigmoid(b))(a - b).
    """
    a, b = a.float(), b.float()
    return ((a.sigmoid() - b.sigmoid()) * (a - b)).mean()


def squared_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of (a - b)^2 (regression scores, (B,))."""
    return (a.float() - b.float()).pow(2).mean()


DIVERGENCES = {"sst": symmetric_kl_categorical, "para": symmetric_kl_bernoulli, "sts": squared_error}


def divergence(task: str, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """l_s of SMART for ``task``'s outputs, a scalar fp32 tensor."""
    if task not in DIVERGENCES:
        raise KeyError(f"no SMART divergence for task {task!r}; valid: {sorted(DIVERGENCES)}")
    return DIVERGENCES[task](p, q)


def ema_decay_at(step: int, total_steps: int | None, early: float = 0.99, late: float = 0.999) -> float:
    """beta for update ``step`` (1-based): ``early`` while step <= 0.1 total_steps, then
    ``late`` (SMART Section 4.1); always ``early`` when ``total_steps`` is None."""
    return early if total_steps is None or step <= 0.1 * total_steps else late


def _normalise_inf(g: torch.Tensor) -> torch.Tensor:
    """g / ||g||_inf per token (last axis); a zero gradient stays zero."""
    g = g.float()
    return g / g.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


def adversarial_perturbation(model: nn.Module, batch: Batch, target: torch.Tensor, epsilon: float = 1e-5,
                             noise_std: float = 1e-5, step_size: float = 1e-3, steps: int = 1,
                             generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """delta per part, fp32 (B, T, H): Algorithm 1, lines 6-10, from the clean output ``target``.

    Starts from N(0, noise_std^2) noise and takes ``steps`` projected ascent steps on
    l_s(f(x + delta), target); the result is detached, lies in the L-inf ball of radius
    ``epsilon`` (projected even when ``steps`` = 0) and is zero at padding. Only delta gets
    gradients: no parameter's ``.grad`` is touched.
    """
    target = target.detach()
    with torch.no_grad():
        embeds = [e.detach() for e in model.word_embeddings(batch)]  # per part (B, T, H)
    masks = [part["attention_mask"].unsqueeze(-1).float() for part in batch.inputs]  # (B, T, 1)
    device = embeds[0].device
    noise_device = device if generator is None else generator.device
    deltas = [noise_std * torch.randn(e.shape, generator=generator, device=noise_device).to(device) * m
              for e, m in zip(embeds, masks)]
    for _ in range(steps):
        deltas = [d.requires_grad_() for d in deltas]
        with torch.enable_grad():
            out = model(batch, inputs_embeds=[e + d.to(e.dtype) for e, d in zip(embeds, deltas)])
            grads = torch.autograd.grad(divergence(batch.task, out, target), deltas)
        deltas = [(d.detach() + step_size * _normalise_inf(g) * m).clamp(-epsilon, epsilon)
                  for d, g, m in zip(deltas, grads, masks)]
    return [d.detach().clamp(-epsilon, epsilon) for d in deltas]


class Smart:
    """SMART for the training loop: one loss tensor per batch, one teacher update per step.

    ``settings``: the weights of R_s and D_Breg (a zero weight skips that term's passes), the
    inner maximisation's knobs and beta's (see :func:`ema_decay_at`); defaults: the paper's
    (module docstring). ``generator``: source of the noise (None: the global torch RNG).
    ``model`` is only read, to start the teacher at theta~ = theta.

    Use::

        output = model(batch)                       # under the caller's autocast
        loss = smart.regularised_loss(model, batch, output, TASKS[batch.task].loss(output, batch.labels))
        loss.backward(); optimizer.step(); smart.update_ema(model)
    """

    def __init__(self, model: nn.Module, settings: SmartSettings = SmartSettings(),
                 generator: torch.Generator | None = None):
        self.settings, self.generator = settings, generator
        self.step = 0  # optimiser updates folded into the teacher so far
        self.ema = {name: p.detach().clone() for name, p in model.named_parameters()}  # theta~
        self.last_terms: dict[str, torch.Tensor] = {}  # detached R_s and D_Breg of the last call, for logging

    def adversarial_loss(self, model: nn.Module, batch: Batch, output: torch.Tensor) -> torch.Tensor:
        """R_s: l_s(f(x + delta), f(x)), differentiable in the parameters through both outputs;
        in fp32 under autocast unless ``precision="amp"`` (module docstring)."""
        device_type = output.device.type
        if self.settings.precision == "fp32" and torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type, enabled=False):
                return self._adversarial_loss(model, batch, model(batch))
        return self._adversarial_loss(model, batch, output)

    def _adversarial_loss(self, model: nn.Module, batch: Batch, output: torch.Tensor) -> torch.Tensor:
        s = self.settings
        deltas = adversarial_perturbation(model, batch, output, s.epsilon, s.noise_std, s.step_size, s.steps,
                                          self.generator)
        embeds = model.word_embeddings(batch)  # with gradients: the embedding matrix is a parameter too
        perturbed = model(batch, inputs_embeds=[e + d.to(e.dtype) for e, d in zip(embeds, deltas)])
        return divergence(batch.task, perturbed, output)

    def _check_model(self, model: nn.Module) -> None:
        names = {name for name, _ in model.named_parameters()}
        if names != set(self.ema):
            raise ValueError("the model's parameters changed since this Smart was built (PALs added?); "
                             "build a new Smart for the new model")

    def bregman_loss(self, model: nn.Module, batch: Batch, output: torch.Tensor) -> torch.Tensor:
        """D_Breg: l_s(f(x; theta), f(x; theta~)), differentiable in theta only: f(x; theta~) is
        the live model run with the teacher's parameters, without gradients."""
        self._check_model(model)
        with torch.no_grad():
            teacher = functional_call(model, self.ema, (batch,))
        return divergence(batch.task, output, teacher)

    def regularised_loss(self, model: nn.Module, batch: Batch, output: torch.Tensor,
                         task_loss: torch.Tensor) -> torch.Tensor:
        """task_loss + lambda_s R_s + mu D_Breg, ONE tensor for the caller to differentiate.

        The reference code added the regulariser to a Python float and discarded it
        (STUDY.md, defect 1); here every term stays in the returned graph.
        """
        zero, s = task_loss.new_zeros((), dtype=torch.float32), self.settings
        r_s = self.adversarial_loss(model, batch, output) if s.lambda_s > 0 else zero
        d_breg = self.bregman_loss(model, batch, output) if s.mu > 0 else zero
        self.last_terms = {"adversarial": r_s.detach(), "bregman": d_breg.detach()}
        return task_loss + s.lambda_s * r_s + s.mu * d_breg

    @torch.no_grad()
    def update_ema(self, model: nn.Module) -> None:
        """theta~ <- beta theta~ + (1 - beta) theta, after each optimiser step (Algorithm 1, line 14)."""
        self._check_model(model)
        self.step += 1
        s = self.settings
        beta = ema_decay_at(self.step, s.total_steps, s.ema_decay, s.ema_decay_late)
        for name, p in model.named_parameters():
            self.ema[name].lerp_(p.detach().to(self.ema[name].dtype), 1.0 - beta)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (safetensors-ready): ``ema.<parameter>``, ``step`` and, with an own
        generator, ``generator``. The ``ema.*`` entries are the live tensors, as in
        ``nn.Module.state_dict``: save them before the next :meth:`update_ema`."""
        state = {f"ema.{name}": t for name, t in self.ema.items()}
        state["step"] = torch.tensor([self.step], dtype=torch.int64)
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        names = {k[len("ema."):] for k in state if k.startswith("ema.")}
        if names != set(self.ema):
            missing, unexpected = sorted(set(self.ema) - names), sorted(names - set(self.ema))
            raise KeyError(f"SMART state does not match the model: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for name, t in self.ema.items():
                t.copy_(state[f"ema.{name}"])
        self.step = int(state["step"].reshape(-1)[0])
        if "generator" in state:
            if self.generator is None:
                raise KeyError("SMART state holds a generator state but this Smart has no generator")
            self.generator.set_state(state["generator"])


def adversarial_term_sizes(model: nn.Module, batches: list[Batch], device_type: str = "cpu",
                           dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> dict[str, float]:
    """The mean adversarial term R_s over ``batches`` under ``dtype`` autocast, computed in the
    caller's precision ("amp", as the report's runs did) and in fp32 (the default here), with
    dropout off so that only the perturbation separates the two forwards; and, for scale, the
    fp32 term with dropout on. The model's mode is restored."""
    was_training = model.training
    sizes = {}
    for name, precision, training in (("amp", "amp", False), ("fp32", "fp32", False),
                                      ("fp32 with dropout", "fp32", True)):
        model.train(training)
        smart = Smart(model, SmartSettings(mu=0.0, precision=precision), torch.Generator().manual_seed(seed))
        values = []
        for batch in batches:
            with torch.autocast(device_type, dtype=dtype):
                output = model(batch)
                values.append(float(smart.adversarial_loss(model, batch, output).detach()))
        sizes[name] = sum(values) / len(values)
    model.train(was_training)
    return sizes
