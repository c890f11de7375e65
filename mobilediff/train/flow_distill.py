"""`mobilediff distill` on a flow-matching diffusion transformer: a PixArt pipeline whose scheduler is a flow
model's (``train-base --backbone dit --objective flow``), its transformer predicting the velocity
v = noise - x_0 along the straight path x_s = (1 - s) x_0 + s noise, fed the timestep s x T.

The methods of :mod:`mobilediff.train.distill` with velocity targets, on the same data (:class:`DistillData`: the
teacher's latents of the shapes domain or of the user's images, or the user's prompts alone), the same training loop,
checkpoints and resume rules:

- ``progressive`` -- a student initialised from its teacher learns to do in one Euler step what the teacher does in
  two: on the N-step grid s_k = shift(1 - k / N) (the grid the flow ``euler`` sampler runs at N steps), from x at
  s_{2i} the teacher's two Euler steps land at x'' (s_{2i+2}); the student's velocity is pulled to
  (x'' - x) / (s_{2i+2} - s_{2i}), the one straight step that lands there. Rounds halve the step count; the first
  round's teacher is guided at ``guidance`` (classifier-free), later rounds' teachers are students that already
  give the guided velocity from the caption alone. Each round's student samples with ``euler`` at its step count and
  guidance 1 (``OUT/steps-N``).
- ``lcm`` -- consistency distillation in the flow parametrisation: the consistency function
  f(x, s) = x - s v(x, s) (the velocity's x_0, which is x at s = 0, the boundary condition, without extra scalings)
  of the student at s is pulled (pseudo-Huber) towards the EMA target network's f at s' = s minus one grid step of
  ``ddim_timesteps`` steps, reached by one Euler step of the teacher guided at ``guidance``. s is drawn uniformly
  over (0, 1] (continuous, so every step count's grid is trained). The student samples with the flow ``lcm``
  sampler (x_0 = x - s v, re-noised to the next s) at guidance 1 (``OUT/model``).
- ``slim`` -- block removal (BK-SDM) on the transformer: whole transformer blocks dropped (``--remove block-K,...``;
  default: the middle third), the student started from the teacher's remaining weights and trained on the teacher's
  velocity (guided at ``guidance``, or a student teacher's own) plus the outputs of every kept block against the
  teacher's same block (each stage's squared error relative to the teacher feature's mean square), at the grid of
  ``steps`` Euler steps; it samples there with ``euler`` at guidance 1.

The caption reaches the transformer as PixArt's pipeline gives it: the text encoder and the cross-attention see the
tokens up to the first EOS (:func:`caption_mask`).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from mobilediff.errors import MobilediffError
from mobilediff.train.loop import EMA, Leg, run_leg
from mobilediff.transformer_family import caption_mask  # noqa: F401 (the caption's mask, as DistillData builds it)

FLOW_METHODS = ("progressive", "lcm", "slim")


# ---------------------------------------------------------------------------------------------- the flow path
def shifted(s: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow schedule's shift towards high noise: shift s / (1 + (shift - 1) s) (identity at 1)."""
    return shift * s / (1 + (shift - 1) * s)


def flow_grid(n: int, shift: float) -> torch.Tensor:
    """The n + 1 points s_0 = 1 > ... > s_n = 0 of an n-step run of the flow ``euler`` sampler (linspace(1, 0, n + 1)
    shifted): the points its timesteps are s x T at, and where it ends."""
    return shifted(torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64), shift).float()


def velocity(net, sample: torch.Tensor, s: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor,
             num_train_timesteps: int) -> torch.Tensor:
    """The transformer's velocity at ``s`` (B,) (its learned-variance half dropped, as the pipeline drops it)."""
    out = net(sample, encoder_hidden_states=hidden, timestep=s * num_train_timesteps, encoder_attention_mask=mask,
              added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample.float()
    return out[:, :sample.shape[1]] if out.shape[1] == 2 * sample.shape[1] else out


@dataclass
class Caption:
    """Text features of a batch of captions and their attention mask."""

    hidden: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, L)

    def expand(self, n: int) -> "Caption":
        return Caption(self.hidden.expand(n, *self.hidden.shape[1:]), self.mask.expand(n, *self.mask.shape[1:]))

    def __getitem__(self, idx) -> "Caption":
        return Caption(self.hidden[idx], self.mask[idx])


@dataclass
class FlowTeacher:
    """The teacher as the solvers call it: (x, s) -> its classifier-free-guided velocity at ``guidance`` (one batched
    call, cond + uncond), or its conditional velocity alone when ``guidance`` is None (a student teacher)."""

    net: torch.nn.Module
    cond: Caption
    uncond: Caption
    guidance: float | None
    num_train_timesteps: int

    @torch.no_grad()
    def __call__(self, sample: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        T = self.num_train_timesteps
        if self.guidance is None:
            return velocity(self.net, sample, s, self.cond.hidden, self.cond.mask, T)
        v = velocity(self.net, torch.cat([sample, sample]), torch.cat([s, s]),
                     torch.cat([self.cond.hidden, self.uncond.hidden]), torch.cat([self.cond.mask, self.uncond.mask]), T)
        v_cond, v_uncond = v.chunk(2)
        return v_uncond + self.guidance * (v_cond - v_uncond)


def euler(sample: torch.Tensor, v: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
    """One Euler step of the flow ODE from ``s`` to ``s_next`` (both (B,))."""
    return sample + (s_next - s)[:, None, None, None] * v


def noised(latents: torch.Tensor, noise: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The point at ``s`` (B,) of the straight path from ``latents`` to ``noise``."""
    s = s[:, None, None, None]
    return (1 - s) * latents + s * noise


def flow_config(teacher) -> tuple[int, float]:
    """(num_train_timesteps, shift) of a flow teacher's scheduler."""
    from mobilediff.samplers import flow_shift

    cfg = teacher.scheduler.config
    return int(cfg.get("num_train_timesteps", 1000)), flow_shift(cfg)


# ---------------------------------------------------------------------------------------------- block removal
def parse_block_removal(spec: str, num_layers: int) -> list[int]:
    """``"block-2,block-3"`` -> [2, 3], checked against the teacher's ``num_layers`` blocks (at least one kept)."""
    items = [s.strip() for s in str(spec).split(",")]
    if any(not re.fullmatch(r"block-\d+", s) for s in items):
        raise MobilediffError(f"--remove: a diffusion transformer's blocks are named block-K (K = 0..{num_layers - 1}), "
                              f"got {spec!r}")
    blocks = [int(s.split("-")[1]) for s in items]
    if len(set(blocks)) != len(blocks):
        raise MobilediffError(f"--remove: {spec!r} names a block twice")
    if any(b >= num_layers for b in blocks):
        raise MobilediffError(f"--remove: the teacher's transformer has blocks 0..{num_layers - 1}, got {spec!r}")
    if len(blocks) >= num_layers:
        raise MobilediffError(f"--remove: {spec!r} removes every block of the teacher's {num_layers}")
    return sorted(blocks)


def default_block_removal(num_layers: int) -> str:
    """The middle third of the blocks (at least one), e.g. block-2,block-3 of 6."""
    k = max(1, num_layers // 3)
    first = (num_layers - k) // 2
    return ",".join(f"block-{i}" for i in range(first, first + k))


def slim_transformer(teacher, removed: list[int]):
    """The teacher's transformer without the ``removed`` blocks, every remaining weight its teacher's (block j of the
    student is the j-th kept block)."""
    from diffusers import PixArtTransformer2DModel

    kept = [i for i in range(teacher.config.num_layers) if i not in removed]
    student = PixArtTransformer2DModel.from_config({**teacher.config, "num_layers": len(kept)})
    state = {}
    for k, v in teacher.state_dict().items():
        m = re.match(r"transformer_blocks\.(\d+)\.(.*)", k)
        if m is None:
            state[k] = v
        elif int(m.group(1)) in kept:
            state[f"transformer_blocks.{kept.index(int(m.group(1)))}.{m.group(2)}"] = v
    student.load_state_dict(state)
    return student


class BlockRecorder:
    """Forward hooks keeping the outputs of a transformer's blocks of the last call."""

    def __init__(self, net):
        self.outputs: list[torch.Tensor | None] = [None] * len(net.transformer_blocks)
        for i, block in enumerate(net.transformer_blocks):
            block.register_forward_hook(self._keep(i))

    def _keep(self, i: int):
        def hook(module, args, output):
            self.outputs[i] = (output[0] if isinstance(output, tuple) else output).float()
        return hook


# ---------------------------------------------------------------------------------------------- objectives
def _pixel_weighted(per_pixel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (per_pixel * weight).mean(dim=(1, 2, 3)) / weight.mean(dim=(1, 2, 3))


class _FlowObjective:
    clip = "student"

    def __init__(self, cfg, data, student, teacher_net):
        self.cfg, self.data, self.teacher_net = cfg, data, teacher_net
        self.models = {"student": student}
        self.T, self.shift = flow_config(data.teacher)

    def checkpointed(self) -> dict:
        return {"student": self.models["student"]}

    def after_resume(self) -> None:
        self.models["student"].train()

    def after_step(self, step: int) -> None:
        pass

    def teacher(self, cond: Caption, guidance: float | None) -> FlowTeacher:
        return FlowTeacher(self.teacher_net, cond, self.data.uncond.expand(cond.hidden.shape[0]), guidance, self.T)

    def student_velocity(self, sample, s, cond: Caption, net=None) -> torch.Tensor:
        with self.data.accelerator.autocast():
            return velocity(net or self.models["student"], sample, s, cond.hidden, cond.mask, self.T)


class FlowProgressiveObjective(_FlowObjective):
    """One progressive round on a flow teacher: the student's velocity at s_{2i} against the straight step that lands
    where the teacher's two Euler steps (s_{2i} -> s_{2i+1} -> s_{2i+2}) do."""

    def __init__(self, cfg, data, student, teacher_net, n: int, guidance: float | None):
        super().__init__(cfg, data, student, teacher_net)
        self.n, self.guidance = n, guidance
        self.log_fields = {"method": "progressive", "round_steps": n, "objective": "flow"}
        self.grid = flow_grid(2 * n, self.shift)

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        data, grid = self.data, self.grid
        g, latents, mask, cond = data.batch(step)
        i = data.draw(lambda size: torch.randint(0, self.n, size, generator=g))
        s, mid, nxt = grid[2 * i], grid[2 * i + 1], grid[2 * i + 2]
        with torch.no_grad():
            teacher = self.teacher(cond, self.guidance)
            if latents is None:
                sample = self._on_trajectory(teacher, g, i)
            else:
                noise = data.draw(lambda size: torch.randn(size, generator=g), *latents.shape[1:])
                sample = noised(latents, noise, s)
            x_mid = euler(sample, teacher(sample, s), s, mid)
            x_next = euler(x_mid, teacher(x_mid, mid), mid, nxt)
            target = (x_next - sample) / (nxt - s)[:, None, None, None]
        v = self.student_velocity(sample, s, cond)
        return _pixel_weighted((v - target) ** 2, data.pixel_weight(mask)).mean(), {}

    def _on_trajectory(self, teacher: FlowTeacher, g: torch.Generator, i: torch.Tensor) -> torch.Tensor:
        """x at each example's s_{2i} on the round teacher's own 2n-step Euler trajectory from pure noise (data-free:
        the inputs the student meets when it samples); examples run in lockstep up to the batch's largest i."""
        data, grid = self.data, self.grid
        sample = data.draw(lambda size: torch.randn(size, generator=g), data.latent_channels, *data.latent_hw)
        for k in range(2 * int(i.max())):
            s, s_next = grid[k].expand(len(i)), grid[k + 1].expand(len(i))
            moved = euler(sample, teacher(sample, s), s, s_next)
            sample = torch.where((k < 2 * i)[:, None, None, None], moved, sample)
        return sample


class FlowConsistencyObjective(_FlowObjective):
    """Consistency distillation on a flow teacher: f(x, s) = x - s v(x, s) of the student at s against the EMA target
    network's f at one teacher Euler step earlier (pseudo-Huber)."""

    def __init__(self, cfg, data, student, target, teacher_net):
        super().__init__(cfg, data, student, teacher_net)
        self.target = target
        self.target_ema = EMA(target.state_dict(), cfg.target_ema, warmup=False)
        self.log_fields = {"method": "lcm", "objective": "flow"}

    def checkpointed(self) -> dict:
        return {"student": self.models["student"], "target": self.target}

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        cfg, data = self.cfg, self.data
        g, latents, mask, cond = data.batch(step)
        delta = 1.0 / cfg.ddim_timesteps
        u = data.draw(lambda size: torch.rand(size, generator=g))
        r = delta + (1 - delta) * u  # unshifted position in (delta, 1]; the solver step is one grid step before it
        s, s_prev = shifted(r, self.shift), shifted((r - delta).clamp_min(0.0), self.shift)
        noise = data.draw(lambda size: torch.randn(size, generator=g), *latents.shape[1:])
        sample = noised(latents, noise, s)
        f_student = sample - s[:, None, None, None] * self.student_velocity(sample, s, cond)
        with torch.no_grad():
            x_prev = euler(sample, self.teacher(cond, cfg.guidance)(sample, s), s, s_prev)
            v_target = velocity(self.target, x_prev, s_prev, cond.hidden, cond.mask, self.T)
            f_target = x_prev - s_prev[:, None, None, None] * v_target
        huber = torch.sqrt((f_student - f_target) ** 2 + cfg.huber_c ** 2) - cfg.huber_c
        return _pixel_weighted(huber, data.pixel_weight(mask)).mean(), {}

    def after_step(self, step: int) -> None:
        self.target_ema.update(self.data.accelerator.unwrap_model(self.models["student"]), step)


class FlowSlimObjective(_FlowObjective):
    """Block removal on a flow teacher: the slim student's velocity against the teacher's (pixel-weighted squared
    error) plus ``feature_weight`` x the mean over the kept blocks of each block output's squared error relative to
    the teacher's same block's mean square, at the grid points of ``steps`` Euler steps."""

    def __init__(self, cfg, data, student, teacher_net, removed: list[int], guidance: float | None):
        super().__init__(cfg, data, student, teacher_net)
        self.guidance = guidance
        self.log_fields = {"method": "slim", "objective": "flow"}
        self.points = flow_grid(cfg.steps, self.shift)[:-1]
        self.kept = [i for i in range(teacher_net.config.num_layers) if i not in removed]
        self.teacher_blocks, self.student_blocks = BlockRecorder(teacher_net), BlockRecorder(student)

    def loss(self, step: int) -> tuple[torch.Tensor, dict[str, str]]:
        data = self.data
        g, latents, mask, cond = data.batch(step)
        s = self.points[data.draw(lambda size: torch.randint(0, len(self.points), size, generator=g))]
        noise = data.draw(lambda size: torch.randn(size, generator=g), *latents.shape[1:])
        sample = noised(latents, noise, s)
        with torch.no_grad():
            target = self.teacher(cond, self.guidance)(sample, s)
            # a guided call's batch is the conditional rows, then the unconditional ones
            features = [self.teacher_blocks.outputs[i][:len(sample)] for i in self.kept]
        v = self.student_velocity(sample, s, cond)
        out_loss = _pixel_weighted((v - target) ** 2, data.pixel_weight(mask)).mean()
        feat_loss = torch.stack([((st - t) ** 2).mean() / (t ** 2).mean().clamp_min(1e-8)
                                 for st, t in zip(self.student_blocks.outputs, features)]).mean()
        return out_loss + self.cfg.feature_weight * feat_loss, {"out": f"{out_loss.item():.5f}",
                                                                 "feat": f"{feat_loss.item():.4f}"}


# ---------------------------------------------------------------------------------------------- runs
def _leg(cfg, data, desc: str, steps: int, first_step: int = 0, **state) -> Leg:
    return Leg(run_dir=cfg.out, desc=desc, steps=steps, first_step=first_step, lr_warmup_steps=cfg.warmup_steps,
               checkpoint_every=cfg.checkpoint_every, log_every=25, grad_clip=cfg.grad_clip, loss_format=".5f",
               checkpoint_state={**state, **data.run_record},
               **({"elapsed_key": "round_elapsed_seconds"} if state else {}))


def _train(cfg, data, objective, leg: Leg, ckpt) -> tuple[torch.nn.Module, dict]:
    student = objective.models["student"]
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    seconds = run_leg(leg, objective, opt, data.accelerator, ckpt)
    return (data.accelerator.unwrap_model(objective.models["student"]).eval(),
            {"train_steps": leg.steps, "train_seconds": seconds})


def train_progressive_round(cfg, data, teacher_net, n: int, r: int, ckpt) -> tuple[torch.nn.Module, dict]:
    """Round ``r``: a student at ``n`` Euler steps learns its ``2n``-step teacher; global steps r*K .. (r+1)*K. The
    first round's target is the guided teacher, later rounds' their student teacher's own velocity (guidance is
    folded in once)."""
    K = cfg.max_train_steps
    student = copy.deepcopy(teacher_net).requires_grad_(True).train()
    teacher_net = teacher_net.requires_grad_(False).eval()
    objective = FlowProgressiveObjective(cfg, data, student, teacher_net, n, cfg.guidance if r == 0 else None)
    leg = _leg(cfg, data, f"distill progressive {2 * n}->{n} steps", K, r * K, round=r, round_steps=n)
    in_round = ckpt is not None and leg.first_step < ckpt.step <= leg.end_step
    return _train(cfg, data, objective, leg, ckpt if in_round else None)


def train_consistency(cfg, data, teacher_net, ckpt) -> tuple[torch.nn.Module, dict]:
    student = copy.deepcopy(teacher_net).requires_grad_(True).train()
    target = copy.deepcopy(teacher_net).requires_grad_(False).eval()
    objective = FlowConsistencyObjective(cfg, data, student, target, teacher_net.requires_grad_(False).eval())
    return _train(cfg, data, objective, _leg(cfg, data, "distill lcm (flow consistency)", cfg.max_train_steps), ckpt)


def train_slim(cfg, data, teacher_net, removed: list[int], guidance: float | None, ckpt) -> tuple[torch.nn.Module, dict]:
    student = slim_transformer(teacher_net, removed).requires_grad_(True).train()
    objective = FlowSlimObjective(cfg, data, student, teacher_net.requires_grad_(False).eval(), removed, guidance)
    desc = f"distill slim (remove {', '.join(f'block-{b}' for b in removed)})"
    return _train(cfg, data, objective, _leg(cfg, data, desc, cfg.max_train_steps), ckpt)


def student_shapes(cfg, teacher_net) -> dict:
    """The shapes of what a checkpoint of this run holds, by name (for the resume checks)."""
    from mobilediff.train.loop import module_shapes

    if cfg.method == "slim":
        with torch.random.fork_rng(devices=[]):
            shapes = module_shapes(slim_transformer(teacher_net, removal(cfg, teacher_net)))
        return {"student": shapes}
    shapes = module_shapes(teacher_net)
    return {"student": shapes, "target": shapes} if cfg.method == "lcm" else {"student": shapes}


def removal(cfg, teacher_net) -> list[int]:
    n = teacher_net.config.num_layers
    return parse_block_removal(cfg.remove or default_block_removal(n), n)


def save_student(path: Path, teacher, teacher_dir: Path, transformer, info: dict) -> None:
    """A PixArt pipeline of the teacher's text encoder, tokenizer (its CLIP BPE files kept for the apps), VAE and flow
    scheduler around the student's transformer, with ``distillation.json``."""
    from diffusers import PixArtAlphaPipeline

    from mobilediff.train.distill import write_student

    pipe = PixArtAlphaPipeline(vae=teacher.vae, text_encoder=teacher.text_encoder, tokenizer=teacher.tokenizer,
                               transformer=transformer, scheduler=copy.deepcopy(teacher.scheduler))
    write_student(path, pipe, teacher_dir, info)
