"""Rollouts with a colocated vLLM engine (``algo.rollout.engine=vllm``; docs/rollout.md).

Each process runs its own in-process vLLM engine beside the model it trains. The engine is built
once, lazily on the first ``generate``, from the policy's config and tokenizer with random
(``load_format="dummy"``) weights; before every ``generate`` the policy's current weights are
loaded into it (:meth:`VLLMBackend.sync`), so rollouts always come from the model being trained.

Only the generation is vLLM's: the prompts are encoded, and the generated token ids cut and
decoded, by :class:`mplus.rollout.engine.TokenRolloutEngine`, exactly as for the HF engine, so a
response ends at the same token whichever engine generated it. vLLM's own log-probs of the
sampled tokens come back as ``Rollout.sampler_logprobs``; the update's old log-probs still come
from the training forward pass.

vLLM is imported only here, and only when an engine is first used: the default (``hf``) never
needs it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mplus.errors import UserError
from mplus.preflight.rollout import VLLM_INSTALL_HINT  # the one install line (preflight too)
from mplus.rollout.engine import Rollout, TokenRolloutEngine, _device_of

log = logging.getLogger(__name__)

DEFAULT_GPU_MEMORY_UTILIZATION = 0.4  # hardware.vllm_gpu_memory_utilization=null


def vllm_missing_error() -> UserError:
    return UserError(
        f"algo.rollout.engine=vllm: the vllm package is not importable here; install it with "
        f"{VLLM_INSTALL_HINT}, or use algo.rollout.engine=hf"
    )


def _import_vllm():
    # In-process engine core: weights are handed over as tensors (no pickling to a subprocess)
    # and no CUDA context is forked. A user's explicit 1 is refused rather than overridden.
    if os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
        raise UserError(
            "algo.rollout.engine=vllm runs vLLM inside the training process: unset "
            "VLLM_ENABLE_V1_MULTIPROCESSING (or set it to 0)"
        )
    try:
        import vllm
    except ImportError as e:
        raise vllm_missing_error() from e
    _quiet_sync_logs()
    return vllm


def _quiet_sync_logs() -> None:
    """Drops vLLM's per-sync chatter: the INFO lines of every in-place reload and cache reset,
    and the warning that a rotary embedding got no weights (its cos/sin cache is a buffer that
    no checkpoint holds; vLLM puts the old one back). Other reload warnings stay. Filters, not
    levels: vLLM's logging setup resets its loggers' levels when an engine starts."""

    def not_rotary(record: logging.LogRecord) -> bool:
        return not (record.args and str(record.args[0]).endswith("RotaryEmbedding"))

    def warnings_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    for name, f in (
        ("vllm.model_executor.model_loader.reload.layerwise", not_rotary),
        ("vllm.model_executor.model_loader.reload.inplace", warnings_only),
        ("vllm.v1.core.block_pool", warnings_only),
    ):
        logger = logging.getLogger(name)
        if f.__name__ not in {getattr(g, "__name__", "") for g in logger.filters}:
            logger.addFilter(f)


def _full(t: torch.Tensor) -> torch.Tensor:
    """A whole, detached tensor: FSDP2's DTensor shards are gathered (a collective: every rank
    syncs the same names in the same order)."""
    full_tensor = getattr(t, "full_tensor", None)
    if full_tensor is not None:
        t = full_tensor()
    return t.detach()


def _hf_class(model: Any) -> type:
    from transformers import PreTrainedModel

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return next(
        c
        for c in type(base).__mro__
        if issubclass(c, PreTrainedModel) and not c.__module__.startswith("torch.")
    )


def policy_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's parameters under their Hugging Face names.

    A peft (LoRA) policy yields its base weights with every active, unmerged adapter's delta
    added (the merged model, computed tensor by tensor); the training model itself is left as
    it is. Under FSDP call this inside ``D.gathered(model)`` on every rank.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft is a dependency; without it there is no LoRA policy either
        LoraLayer = ()  # noqa: N806
    lora = {n: m for n, m in base.named_modules() if LoraLayer and isinstance(m, LoraLayer)}
    with torch.no_grad():
        for name, p in base.named_parameters():
            owner = next((o for o in lora if name.startswith(o + ".")), None)
            if owner is None:
                if ".original_module." in name:  # peft modules_to_save: the trained copy counts
                    continue
                yield _hf_name(name), _full(p)
                continue
            rest = name[len(owner) + 1 :]
            if not rest.startswith("base_layer."):
                continue  # lora_A / lora_B / lora_embedding_*: folded into the base weight
            key, t = rest[len("base_layer.") :], _full(p)
            layer = lora[owner]
            if key == "weight" and not getattr(layer, "merged", False):
                for a in layer.active_adapters:
                    if a in getattr(layer, "lora_A", {}) or a in getattr(
                        layer, "lora_embedding_A", {}
                    ):
                        t = t + _full(layer.get_delta_weight(a)).to(t.dtype)
            yield _hf_name(f"{owner}.{key}"), t


def _hf_name(name: str) -> str:
    return name.replace("modules_to_save.default.", "")  # peft's trained copy under its name


class VLLMBackend:
    """One colocated vLLM engine per process, shared by the engines that sample from it (PPO's
    rollouts and the held-out evaluation take different sampling settings, one set of weights).

    Args:
        tokenizer: The policy's tokenizer (saved beside the config for vLLM's detokenizer, used
            for stop strings only; prompts go in as token ids).
        seed: vLLM's seed for rows sampled without keys (each rank adds its rank).
        gpu: Whether vLLM runs on the GPU (else its CPU backend).
        gpu_memory_utilization: Share of one GPU vLLM takes (weights and KV cache).
        enable_sleep_mode: Sleep between rollouts (weights offloaded, KV cache freed), wake
            before; GPU only; None = on with a GPU.
        cpu_kv_cache_gib: KV-cache size on CPU, GiB.
        enforce_eager: No CUDA graphs.
        dtype: Weight dtype (``float32`` ...); None = the policy's parameter dtype.
        max_model_len: Longest prompt + response; None = the model's ``max_position_embeddings``.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        seed: int = 0,
        gpu: bool | None = None,
        gpu_memory_utilization: float | None = None,
        enable_sleep_mode: bool | None = None,
        cpu_kv_cache_gib: float = 1.0,
        enforce_eager: bool = True,
        dtype: str | None = None,
        max_model_len: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.seed = seed
        self.gpu = torch.cuda.is_available() if gpu is None else gpu
        self.gpu_memory_utilization = gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION
        if enable_sleep_mode and not self.gpu:
            raise UserError("algo.rollout.enable_sleep_mode=true: vLLM sleeps on a GPU only")
        self.sleep_mode = self.gpu if enable_sleep_mode is None else enable_sleep_mode
        self.cpu_kv_cache_gib = cpu_kv_cache_gib
        self.enforce_eager = enforce_eager
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.llm = None
        self.asleep = False
        self.n_syncs = 0
        self.sync_seconds = 0.0
        self._dir: str | None = None

    # ------------------------------------------------------------------ building
    def build(self, model: Any) -> None:
        """Builds the engine for ``model``'s architecture (random weights: :meth:`sync` fills
        them). Refuses, in one line, an architecture vLLM lacks."""
        if self.llm is not None:
            return
        vllm = _import_vllm()
        cls = _hf_class(model)
        config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
        arch = cls.__name__
        supported = vllm.ModelRegistry.get_supported_archs()
        if arch not in supported:
            raise UserError(
                f"algo.rollout.engine=vllm: vLLM {vllm.__version__} has no {arch} (the policy's "
                "architecture); use algo.rollout.engine=hf"
            )
        dtype = self.dtype or str(next(model.parameters()).dtype).removeprefix("torch.")
        self._dir = tempfile.mkdtemp(prefix="mplus-vllm-")
        config = config.__class__.from_dict(config.to_dict())  # a copy: the policy's stays
        config.architectures = [arch]
        config.save_pretrained(self._dir)
        self.tokenizer.save_pretrained(self._dir)
        max_len = self.max_model_len or getattr(config, "max_position_embeddings", None)
        kwargs: dict[str, Any] = dict(
            model=self._dir,
            tokenizer=self._dir,
            load_format="dummy",
            dtype=dtype,
            seed=self.seed + _rank(),
            enforce_eager=self.enforce_eager,
            max_model_len=max_len,
            logprobs_mode="processed_logprobs",  # log-probs after temperature / top-k / top-p
            generation_config="vllm",  # sampling settings are the engine's, not the folder's
            tensor_parallel_size=1,
        )
        if self.gpu:
            kwargs.update(
                gpu_memory_utilization=self.gpu_memory_utilization,
                enable_sleep_mode=self.sleep_mode,
            )
        else:
            kwargs["kv_cache_memory_bytes"] = int(self.cpu_kv_cache_gib * 2**30)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # one engine per rank over the trainer's process group (TRL's colocate mode)
            if torch.distributed.get_world_size() > 1:
                kwargs["distributed_executor_backend"] = "external_launcher"
        start = time.perf_counter()
        self.llm = vllm.LLM(**kwargs)
        log.info(
            "vLLM %s engine for %s (%s) built in %.1f s",
            vllm.__version__,
            arch,
            dtype,
            time.perf_counter() - start,
        )

    def close(self) -> None:
        """Drops the engine and its folder."""
        self.llm = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # ------------------------------------------------------------------ weights
    def sync(self, model: Any) -> None:
        """Loads ``model``'s current weights (HF names; LoRA merged) into the engine in place,
        then resets the prefix cache so no KV computed with the old weights is reused."""
        start = time.perf_counter()
        self.llm.collective_rpc(
            "reload_weights",
            kwargs={"weights_iterator": policy_weights(model), "is_checkpoint_format": True},
        )
        self.llm.reset_prefix_cache()
        self.n_syncs += 1
        self.sync_seconds += time.perf_counter() - start

    def ready(self, model: Any) -> None:
        """Before a generate: built, awake, holding ``model``'s weights."""
        self.build(model)
        if self.asleep:
            self.llm.wake_up(tags=["weights"])  # the KV cache after the weights: lower peak
            self.sync(model)
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        else:
            self.sync(model)

    def rest(self) -> None:
        """After a generate: sleep (level 1) when sleep mode is on."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True


class VLLMEngine(TokenRolloutEngine):
    """:class:`mplus.rollout.HFGenerateEngine`'s contract with vLLM generating.

    The sampling arguments are :class:`TokenRolloutEngine`'s; ``backend`` is the engine to
    sample from (shared between engines), else one is made from ``backend_kwargs``
    (:class:`VLLMBackend`'s arguments). ``row_seed``: rows sampled without keys get the seeds
    ``sample_key(row_seed, rank, i)``, so every call draws the same noise for row ``i`` (the held-out
    evaluation: the same sampling stream for every model it compares, as ``hf`` gets from
    seeding torch before generating); None draws the base of the row seeds from torch's generator
    (the RL step reseeds it every step, so resumed rollouts repeat the uninterrupted ones).

    Stop strings are also handed to vLLM, but only to end a row early: the cut is
    :func:`mplus.rollout.stops.find_response_end`'s, on the token ids vLLM returns.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_strings: Sequence[str] = ("\n\nHuman:",),
        max_prompt_length: int | None = None,
        *,
        backend: VLLMBackend | None = None,
        row_seed: int | None = None,
        **backend_kwargs: Any,
    ) -> None:
        super().__init__(
            tokenizer,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop_strings=stop_strings,
            max_prompt_length=max_prompt_length,
        )
        if backend is not None and backend_kwargs:
            raise ValueError("give either a backend or its arguments, not both")
        self.backend = backend or VLLMBackend(tokenizer, **backend_kwargs)
        self.row_seed = row_seed

    def generate(self, model: Any, prompts: list[str], keys: list[int] | None = None) -> Rollout:
        """Samples one response per prompt with ``model``'s current weights.

        With ``keys`` (one int per prompt; a temperature > 0) row ``i`` is sampled with vLLM's
        per-request seed ``keys[i]``: reproducible and independent of the batch, though not the
        same draw as the HF engine's keyed sampler.
        """
        start = time.perf_counter()
        device = _device_of(model)
        query_ids, query_mask, n_truncated = self._encode_prompts(prompts, device)
        if keys is not None:
            if len(keys) != len(prompts):
                raise ValueError(f"{len(keys)} sampling keys for {len(prompts)} prompts")
            if not self.temperature > 0:
                raise ValueError(f"keyed sampling needs a temperature > 0, got {self.temperature}")
        elif self.temperature > 0:
            # per-row seeds drawn from torch's generator, which the RL step reseeds from (run
            # seed, step): a resumed run samples what the uninterrupted one did
            from mplus.rollout.keyed import sample_key

            base = self.row_seed
            if base is None:
                base = int(torch.randint(0, 2**62, (1,)))
            keys = [sample_key(base, _rank(), i) for i in range(len(prompts))]
        from vllm.inputs import TokensPrompt

        rows = [
            ids[m.bool()].tolist() for ids, m in zip(query_ids.cpu(), query_mask.cpu(), strict=True)
        ]
        params = [
            self._sampling_params(None if keys is None else keys[i]) for i in range(len(rows))
        ]
        backend = self.backend
        backend.ready(model)
        try:
            outs = backend.llm.generate(
                [TokensPrompt(prompt_token_ids=r) for r in rows], params, use_tqdm=False
            )
        finally:
            backend.rest()
        generated, logprobs = [], []
        for out in outs:
            c = out.outputs[0]
            ids = list(c.token_ids)
            generated.append(ids)
            logprobs.append([lp[t].logprob for lp, t in zip(c.logprobs or [], ids, strict=True)])
        return self._finish(start, prompts, query_ids, query_mask, n_truncated, generated, logprobs)

    def _sampling_params(self, seed: int | None):
        from vllm import SamplingParams

        greedy = self.temperature == 0
        return SamplingParams(
            n=1,
            max_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=1.0 if greedy else self.top_p,
            top_k=0 if greedy else self.top_k,
            seed=seed,
            stop=list(self.stop_strings) or None,
            include_stop_str_in_output=True,
            stop_token_ids=None if self.eos_token_id is None else [self.eos_token_id],
            logprobs=0,  # the sampled token's own log-prob only
        )


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0
