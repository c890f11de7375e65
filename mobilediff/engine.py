"""Generate from a bundle alone: the Python reference of what the demo apps do.

Reads only the bundle: manifest, tokenizer files, sampler table, component files (each checked against its
sha256). No diffusers scheduler and no PyTorch module runs here; PyTorch only holds the tensors.
"""
from __future__ import annotations

import contextlib
import gc
import json
from pathlib import Path

import torch

from mobilediff.bundle import (COMPONENTS, IMAGE_ENCODER, classifier_free_guidance, component_file, guidance_embedding, read_manifest,
                               sha256_path)
from mobilediff.errors import MobilediffError
from mobilediff.sampler_table import run_image_table, run_table, strength_steps
from mobilediff.targets import get_runtime



class BundleTokenizer:
    """A bundle's tokenizer as the contract defines it (tests/contract/tokenizer.json): the CLIP BPE of its
    ``vocab.json`` and ``merges.txt`` (a ``tokenizer.json`` beside them is for other tools and never read, as in the
    apps), then ``[bos_id]`` + the prompt's first ``max_length - 2`` ids + ``[eos_id]``, padded with ``pad_id``. The
    two files are checked against the manifest's sha256 before they are read."""

    def __init__(self, bundle: Path, spec):
        from transformers import CLIPTokenizer

        bundle = Path(bundle)
        for f in spec.files:
            path = bundle / f
            if not path.is_file():
                raise MobilediffError(f"bundle tokenizer file missing: {path}")
            if f in spec.file_sha256 and sha256_path(path) != spec.file_sha256[f]:
                raise MobilediffError(f"bundle file {path} does not match its sha256 in the manifest (modified or corrupt)")
        paths = {}
        for name in ("vocab.json", "merges.txt"):
            listed = [f for f in spec.files if Path(f).name == name]
            paths[name] = bundle / (listed[0] if listed else f"tokenizer/{name}")
            if not paths[name].is_file():
                raise MobilediffError(f"bundle tokenizer file missing: {paths[name]}")
        try:
            vocab = json.loads(paths["vocab.json"].read_text(encoding="utf-8"))
            lines = paths["merges.txt"].read_text(encoding="utf-8").split("\n")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MobilediffError(f"corrupt bundle tokenizer file in {bundle / 'tokenizer'}: {e}") from None
        merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
        if not isinstance(vocab, dict) or any(len(m) != 2 for m in merges):
            raise MobilediffError(f"corrupt bundle tokenizer in {bundle / 'tokenizer'}: vocab.json must map tokens to "
                                  f"ids and merges.txt hold one pair a line")
        self.spec = spec
        self.bpe = CLIPTokenizer(vocab=vocab, merges=merges)  # the BPE alone; ids() adds the manifest's specials
        self.bpe.model_max_length = spec.max_length

    masked = False  # True where the text encoder takes the caption's padding mask too (bundle_tokenizer sets it)

    def inputs(self, prompt: str) -> tuple[torch.Tensor, ...]:
        """The text encoder's inputs for ``prompt``: its ids, and its mask where the text encoder takes one."""
        return self.ids_and_mask(prompt) if self.masked else (self.ids(prompt),)

    def ids_and_mask(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, max_length) int32 ids and mask of ``prompt``: the mask 1 over BOS, the prompt's ids that fit and EOS,
        0 over the padding (the tokenizer's attention_mask; an EOS or pad id spelled out in the prompt is the
        prompt's, not padding)."""
        s = self.spec
        n = len(self._body(prompt)) + 2
        mask = torch.zeros((1, s.max_length), dtype=torch.int32)
        mask[0, :n] = 1
        return self.ids(prompt), mask

    def warn_if_truncated(self, prompt: str, warn) -> None:
        """Warn, naming what is lost, when ``prompt`` is longer than the text encoder takes (it is truncated)."""
        from mobilediff.sampling import check_prompt_length

        check_prompt_length(self.bpe, prompt, warn)

    def _body(self, prompt: str) -> list[int]:
        """The prompt's ids without specials, truncated to what fits between BOS and EOS."""
        return self.bpe(prompt, add_special_tokens=False, verbose=False).input_ids[: self.spec.max_length - 2]

    def ids(self, prompt: str) -> torch.Tensor:
        """(1, max_length) int32 ids of ``prompt``."""
        s = self.spec
        body = self._body(prompt)
        ids = [s.bos_id, *body, s.eos_id] + [s.pad_id] * (s.max_length - 2 - len(body))
        return torch.tensor([ids], dtype=torch.int32)


class UnigramTokenizer:
    """A format-2 bundle's SentencePiece unigram tokenizer (T5's; kind ``unigram``): its ``tokenizer.json`` read by
    the tokenizers library (checked against the manifest's sha256 first), the prompt lower-cased and stripped, its
    ids without specials, the first ``max_length - 1`` of them, then ``[eos_id]``, padded with ``pad_id``; the mask
    is 1 over the ids and EOS."""

    masked = True

    def __init__(self, bundle: Path, spec):
        from tokenizers import Tokenizer

        bundle = Path(bundle)
        listed = [f for f in spec.files if Path(f).name == "tokenizer.json"]
        if not listed:
            raise MobilediffError(f"bundle {bundle}'s manifest lists no tokenizer.json for its unigram tokenizer")
        path = bundle / listed[0]
        if not path.is_file():
            raise MobilediffError(f"bundle tokenizer file missing: {path}")
        if listed[0] in spec.file_sha256 and sha256_path(path) != spec.file_sha256[listed[0]]:
            raise MobilediffError(f"bundle file {path} does not match its sha256 in the manifest (modified or corrupt)")
        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises its own exception types for a malformed file
            raise MobilediffError(f"corrupt bundle tokenizer file {path}: {str(e).splitlines()[0][:200]}") from None
        self.spec = spec

    def ids_and_mask(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, max_length) int32 ids and mask of ``prompt``."""
        s = self.spec
        body = self.tok.encode(prompt.lower().strip(), add_special_tokens=False).ids[: s.max_length - 1]
        n = len(body) + 1
        ids = [*body, s.eos_id] + [s.pad_id] * (s.max_length - n)
        return (torch.tensor([ids], dtype=torch.int32),
                torch.tensor([[1] * n + [0] * (s.max_length - n)], dtype=torch.int32))

    def inputs(self, prompt: str) -> tuple[torch.Tensor, ...]:
        return self.ids_and_mask(prompt)

    def warn_if_truncated(self, prompt: str, warn) -> None:
        """Warn, naming what is lost, when ``prompt`` is longer than the text encoder takes (it is truncated)."""
        ids = self.tok.encode(prompt.lower().strip(), add_special_tokens=False).ids
        keep = self.spec.max_length - 1
        if len(ids) > keep:
            warn(f"prompt is {len(ids) + 1} tokens, the text encoder takes {self.spec.max_length}: truncated, dropping "
                 f"{self.tok.decode(ids[keep:])!r}")


def require_image_mode(manifest, bundle: Path, inpaint: bool) -> None:
    """Refuse in one line a bundle exported without the image mode asked for (read from its manifest alone)."""
    if not manifest.supports("inpaint" if inpaint else "img2img"):
        if manifest.image is not None and manifest.image.inpainting_denoiser:
            raise MobilediffError(f"bundle {bundle}'s denoiser is an inpainting UNet: it runs inpainting only "
                                  f"(--init-image with --mask)")
        raise MobilediffError(f"bundle {bundle} was exported without image modes: export it again with "
                              f"--image-modes for {'inpainting' if inpaint else 'image-to-image'}")


def release_memory() -> None:
    """Collect what is unreferenced and hand the C heap's free pages back to the system: glibc's malloc keeps the
    memory of a released component (its weights and runtime state, freed in pieces below its mmap threshold) for
    reuse, so the process's resident memory would not fall when a component is released (a 512 px SD-1.5 UNet's
    1 GiB stayed resident). ``malloc_trim`` is glibc's; elsewhere only the collection runs."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def bundle_tokenizer(bundle: Path, manifest) -> BundleTokenizer | UnigramTokenizer:
    """The bundle's own tokenizer (its files checked against the manifest's sha256), at the manifest's length; it
    gives the caption's padding mask too where the text encoder declares an ``attention_mask`` input (format 2)."""
    if manifest.tokenizer.unigram_kind:
        return UnigramTokenizer(bundle, manifest.tokenizer)
    tok = BundleTokenizer(bundle, manifest.tokenizer)
    tok.masked = "attention_mask" in [t.name for t in manifest.component("text_encoder").inputs]
    return tok


class BundleRunner:
    """Loads a bundle's three components for one host runtime and samples with its tables.

    ``resident`` (default): the three components are loaded once, here, and stay loaded for every generate.
    ``resident=False``: none is loaded here; a generate loads each one when its turn comes (text encoder, then
    denoiser, then decoder) and releases it before the next is loaded, so the process holds one component's weights
    and runtime state at a time (benchmarks/memory.py measures both). ``settings``: runtime settings passed to the
    target's loader (``mobilediff.targets.onnx.load_session``'s session settings; ExecuTorch's ``load`` form).
    ``ort_format`` (ONNX Runtime only): load each component's ORT-format file (target ``ort``) instead of its
    ``.onnx`` graph, as the apps do.
    """

    def __init__(self, bundle: Path, runtime: str, precision: str | None = None, threads: int | None = None,
                 settings: dict | None = None, resident: bool = True, ort_format: bool = False,
                 adapters: list[tuple[str, float]] | None = None):
        self.target = get_runtime(runtime)  # refuses a name that is not a host runtime
        if ort_format and runtime != "onnx":
            raise MobilediffError(f"ORT format is ONNX Runtime's: runtime {runtime!r} cannot load it")
        self.bundle = Path(bundle)
        self.manifest = read_manifest(self.bundle)
        self.runtime = runtime
        self.precision, self.threads, self.settings, self.resident = precision, threads, settings, resident
        file_target = "ort" if ort_format else runtime
        names = COMPONENTS + ((IMAGE_ENCODER,) if self.manifest.image is not None else ())
        self.files = {name: component_file(self.manifest, self.bundle, name, file_target, precision)[0]
                      for name in names}  # every file checked against its sha256 before anything is loaded
        self._slots: dict[str, torch.Tensor] = {}  # component -> its lora_weights input (run-time adapters)
        self._adapter_cache: dict[str, dict] = {}
        self.set_adapters(adapters or [])  # every adapter file checked before anything is loaded
        self.parts = {name: self._load(name) for name in COMPONENTS} if resident else {}  # the encoder: when used
        self.tokenizer = self._tokenizer()
        self.geometry = self.manifest.geometry
        self.guidance = self.manifest.guidance
        self._uncond: torch.Tensor | None = None

    def adapter_names(self) -> list[str]:
        """The run-time adapters the bundle holds (``export --runtime-lora``)."""
        return [f["name"] for f in (self.manifest.adapters or {}).get("files", [])]

    def set_adapters(self, mix: list[tuple[str, float]]) -> None:
        """Switch the run-time adapters: ``[(name, scale)]`` of the bundle's adapters, in the slots' order ([] = the
        base model). Repacks each slotted component's ``lora_weights``; nothing is reloaded. Raises MobilediffError
        for an adapter the bundle does not hold or a mix that needs more rank slots than it has."""
        from mobilediff.runtime_lora import Slots, pack, read_bundle_adapter

        record = self.manifest.adapters
        if record is None:
            if mix:
                raise MobilediffError(f"bundle {self.bundle} holds no run-time adapters (export it with "
                                      f"--runtime-lora; --lora on --model merges an adapter instead)")
            return
        files = {f["name"]: f for f in record["files"]}
        for name, _ in mix:
            if name not in files:
                raise MobilediffError(f"--lora {name}: the bundle holds no run-time adapter of that name (it holds: "
                                      f"{', '.join(files)})")
            if name not in self._adapter_cache:
                f = files[name]
                path = self.bundle / f["path"]
                if not path.is_file():
                    raise MobilediffError(f"bundle file missing: {path}")
                if sha256_path(path) != f["sha256"]:
                    raise MobilediffError(f"bundle file {path} does not match its sha256 in the manifest (modified or "
                                          f"corrupt)")
                self._adapter_cache[name] = read_bundle_adapter(path)
        self._slots = {}
        self._uncond = None  # the unconditional prompt's embedding depends on the text encoder's adapters
        for component, s in record["slots"].items():
            slots = Slots.from_dict(component, s)
            self._slots[component] = pack(slots, [(self._adapter_cache[n].get(component, {}), scale)
                                                  for n, scale in mix])

    def lora_inputs(self) -> dict[str, torch.Tensor]:
        """The ``lora_weights`` each slotted component is fed for the current mix (what the apps must pack)."""
        return dict(self._slots)

    def _lora(self, component: str) -> tuple:
        """The trailing ``lora_weights`` argument of a slotted component (none for the others)."""
        v = self._slots.get(component)
        return () if v is None else (v,)

    def _load(self, name: str):
        kw = {"settings": self.settings} if self.settings else {}
        return self.target.load(self.files[name], self.manifest.component(name), self.threads, name, **kw)

    @contextlib.contextmanager
    def _component(self, name: str):
        """The loaded component ``name``: the resident one, or (``resident=False``) one loaded now and released,
        its memory returned, when the block ends."""
        if self.resident:
            if name not in self.parts:  # the VAE encoder, loaded at its first image-to-image run
                self.parts[name] = self._load(name)
            yield self.parts[name]
            return
        release_memory()  # what the previous component left (its caller's reference is gone by now)
        part = self._load(name)
        try:
            yield part
        finally:
            del part  # the caller drops its own reference after the block (generate does)
            release_memory()

    def _static_batch(self) -> int | None:
        """The denoiser's static batch (None: dynamic), known without loading it: a static-shape target's graph is
        fixed at the manifest's dims (its loader checks that)."""
        if self.resident:
            return self.parts["unet"].static_batch
        return self.manifest.component("unet").dims.get("batch") if self.target.STATIC_SHAPES else None

    def _tokenizer(self):
        return bundle_tokenizer(self.bundle, self.manifest)

    def encode(self, prompt: str, text_encoder=None) -> torch.Tensor:
        """(1, tokens, hidden) text embedding of ``prompt`` (``text_encoder``: an already loaded one)."""
        return self.encode_masked(prompt, text_encoder)[0]

    def encode_masked(self, prompt: str, text_encoder=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``prompt``'s (1, tokens, hidden) text embedding and, for a masked tokenizer (format 2), its (1, tokens)
        float padding mask, which the denoiser takes too (None otherwise)."""
        extra = self._lora("text_encoder")
        inputs = self.tokenizer.inputs(prompt)
        mask = inputs[1].to(torch.float32) if self.tokenizer.masked else None
        if text_encoder is None:
            with self._component("text_encoder") as text_encoder:
                return text_encoder(*inputs, *extra)[0], mask
        return text_encoder(*inputs, *extra)[0], mask

    def _unet(self, unet, x: torch.Tensor, t: float, text: torch.Tensor, cond: torch.Tensor | None,
              extra: list | None = None, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        ts = torch.full((b,), float(t), dtype=torch.float32)
        args = ([x, ts, text] + ([text_mask] if text_mask is not None else []) + ([cond] if cond is not None else [])
                + list(extra or []))
        need = unet.static_batch
        if need is not None and need != b:  # a static-batch graph: pad with copies of the last row, then drop
            pad = need - b
            if pad < 0:
                raise MobilediffError(f"UNet batch {b} exceeds the exported static batch {need}")
            args = [torch.cat([a, a[-1:].expand(pad, *a.shape[1:])]) for a in args]
            return unet(*args, *self._lora("unet"))[0][:b]
        return unet(*args, *self._lora("unet"))[0]

    def check_image_mode(self, mask: bool, strength: float | None, steps: int | None = None,
                         sampler: str | None = None) -> None:
        """Refuse, in one line, an image-to-image or inpainting run the bundle cannot make: a bundle exported without
        ``--image-modes``, a strength outside (0, 1] or one that leaves no step."""
        require_image_mode(self.manifest, self.bundle, mask)
        plan = self.manifest.plan
        strength_steps(self.manifest.sampler_table(sampler or plan.sampler, steps or plan.steps).steps,
                       1.0 if strength is None else strength)

    def encode_image(self, image: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        """The clean latent of ``image`` (1, 3, H, W) in [-1, 1]: ``(mean + std * eps - shift) * scaling``."""
        with self._component(IMAGE_ENCODER) as encoder:
            mean, std = encoder(image)
        del encoder
        z = mean if eps is None else mean + std * eps
        return (z - self.geometry.shift_factor) * self.geometry.scaling_factor

    @torch.no_grad()
    def generate(self, prompt: str, seed: int, steps: int | None = None, sampler: str | None = None,
                 guidance: float | None = None, trace=None, init_image: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, strength: float | None = None) -> torch.Tensor:
        """One image (1, 3, H, W) in [-1, 1]; unset sampling options come from the manifest's default plan. The
        noise comes from torch.Generator().manual_seed(seed) as in :func:`mobilediff.sampling.generate`, so the two
        agree image for image. ``trace(kind, tensor)`` sees "noise", every "fresh_noise" draw and the "latent" after
        every step (mobilediff.goldens records them). ``init_image`` (1, 3, H, W) in [-1, 1]: image-to-image at
        ``strength`` (default 1), and with ``mask`` (1, 1, h, w) of 0/1 (repaint) inpainting, in the manifest's
        image rules (:class:`mobilediff.bundle.ImageModes`)."""
        from mobilediff.sampling import check_prompt

        check_prompt(prompt)
        trace = trace or (lambda kind, tensor: None)
        plan = self.manifest.plan
        table = self.manifest.sampler_table(sampler or plan.sampler, steps or plan.steps)
        g = self.guidance
        scale = plan.guidance if guidance is None else guidance
        gen = torch.Generator().manual_seed(int(seed))
        if mask is not None and init_image is None:
            raise MobilediffError("a mask needs the image it masks (--init-image)")
        image = self.manifest.image
        inpainting = image is not None and image.inpainting_denoiser  # an inpainting UNet (mask + masked image in)
        if inpainting and mask is None:
            raise MobilediffError(f"bundle {self.bundle}'s denoiser is an inpainting UNet: it generates only with an "
                                  f"init image and a mask (--init-image, --mask)")
        image_latent = masked_latent = None
        started = image_latent_needed = False
        if init_image is not None:
            strength = 1.0 if strength is None else strength
            self.check_image_mode(mask is not None, strength, steps, sampler)
            gaussian = image.encoder_posterior == "gaussian"
            # an inpainting UNet encodes the image only when it starts from it (strength < 1), as diffusers does
            image_latent_needed = not inpainting or strength < 1.0
            if image_latent_needed:
                eps = torch.randn(self.geometry.latent_shape, generator=gen) if gaussian else None
                image_latent = self.encode_image(init_image, eps)
            started = True
        noise = torch.randn(self.geometry.latent_shape, generator=gen)
        trace("noise", noise)
        if mask is not None and image.encoder_posterior == "gaussian":
            # diffusers' masked-image encoding draws one (a 4-channel UNet does not use its latent)
            eps2 = torch.randn(self.geometry.latent_shape, generator=gen)
        else:
            eps2 = None
        if inpainting:
            f = self.geometry.vae_scale_factor
            pixel_mask = mask.repeat_interleave(f, 2).repeat_interleave(f, 3)
            masked_latent = self.encode_image(init_image * (1 - pixel_mask), eps2)
        cond = None
        if g.type == "embedding":
            cond = torch.tensor([guidance_embedding(scale, g.embedding_dim)], dtype=torch.float32)
            do_cfg = False
        else:
            do_cfg = scale > 1.0
            if do_cfg and self._static_batch() == 1:
                raise MobilediffError(f"this bundle's denoiser was exported without a classifier-free-guidance batch "
                                      f"(guidance {plan.guidance:g}): generate with guidance 1, or export "
                                      f"again with --guidance > 1")
        with self._component("text_encoder") as text_encoder:
            text, text_mask = self.encode_masked(prompt, text_encoder)
            if do_cfg and self._uncond is None:
                self._uncond = self.encode_masked("", text_encoder)
        del text_encoder  # a component is released when nothing refers to it (resident=False: before the next loads)
        if do_cfg:
            text = torch.cat([self._uncond[0], text])
            text_mask = None if text_mask is None else torch.cat([self._uncond[1], text_mask])

        extra = [mask, masked_latent] if inpainting else []

        def denoise(x: torch.Tensor, t: float) -> torch.Tensor:
            if do_cfg:
                out = self._unet(unet, torch.cat([x, x]), t, text, None, [torch.cat([e, e]) for e in extra], text_mask)
                return classifier_free_guidance(*out.chunk(2), scale)
            return self._unet(unet, x, t, text, cond, extra, text_mask)

        def fresh_noise(i: int) -> torch.Tensor:
            draw = torch.randn(noise.shape, generator=gen)
            trace("fresh_noise", draw)
            return draw

        with self._component("unet") as unet:
            if not started:
                latents = run_table(table, denoise, noise, fresh_noise, lambda i, x: trace("latent", x))
            else:
                latents = run_image_table(table, denoise, image_latent, noise, strength, mask, fresh_noise,
                                          lambda i, x: trace("latent", x), blend=not inpainting)
        unet = None  # denoise's closure refers to it
        z = latents / self.geometry.scaling_factor + self.geometry.shift_factor
        with self._component("vae_decoder") as vae_decoder:
            return vae_decoder(z)[0].clamp(-1, 1)
