"""The embedded base model: a tiny Mistral pretrained on the synthetic corpus, cached by config hash.

Direct RLHF starts from a *pretrained base*, so the tiny model first learns the synthetic corpus
(good and bad behaviour alike, as web text has both, and the knowledge sentences of
:func:`mplus.data.synthetic.knowledge_sentences`) with a short causal-LM stage. The result is
saved in Hugging Face format under ``<cache_dir>/tiny-base/<hash>/`` and reused by every later run
whose model/pretrain config hashes the same.

Everything about the tiny model is here (its transformers config, the cached base, which base a
run starts from); :mod:`mplus.models.builders` imports it, never the other way round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# Bump when the corpus generator, tokenizer recipe or pretraining loop changes meaningfully.
BASE_RECIPE_VERSION = 3  # 2: warmup starts at lr/warmup_steps; 3: fused AdamW (mplus.modules.optim)


def tiny_hf_config(arch, **overrides):
    """The embedded tiny model's Mistral config from ``model.arch``."""
    from transformers import MistralConfig

    kw = dict(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        max_position_embeddings=arch.max_position_embeddings,
        sliding_window=None,
        tie_word_embeddings=False,
    )
    return MistralConfig(**{**kw, **overrides})


def resolve_base(
    model_cfg, cache_dir: str, *, progress_bar: bool = True, log_every: int = 10
) -> str:
    """Path or hub id of the base model; builds (once) the tiny base for ``model=tiny``
    (``progress_bar`` and ``log_every``: how its pretraining shows progress, as every stage's:
    :func:`mplus.modules.progress.progress_callbacks`)."""
    if model_cfg.name_or_path is not None:
        return model_cfg.name_or_path
    return str(
        ensure_tiny_base(model_cfg, Path(cache_dir), progress_bar=progress_bar, log_every=log_every)
    )


def base_key(model_cfg) -> str:
    from mplus.data import synthetic

    payload = {
        "arch": dataclasses.asdict(model_cfg.arch),
        "pretrain": dataclasses.asdict(model_cfg.pretrain),
        "recipe": BASE_RECIPE_VERSION,
        "synthetic": getattr(synthetic, "TASK_VERSION", 0),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def ensure_tiny_base(
    model_cfg, cache_dir: Path, *, progress_bar: bool = True, log_every: int = 10
) -> Path:
    """Return the cached base folder, pretraining it first if it is missing.

    A file lock makes concurrent runs (parallel sweeps, test workers) build it once; the folder
    appears atomically (written under a temp name, then renamed), so a killed build leaves nothing
    half-written behind.
    """
    from filelock import FileLock

    out = Path(cache_dir) / "tiny-base" / base_key(model_cfg)
    if (out / "base_info.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "base_info.json").exists():
            return out
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("Pretraining the tiny base model (cached afterwards at %s)", out)
        pretrain_tiny_base(model_cfg, tmp, progress_bar=progress_bar, log_every=log_every)
        os.replace(tmp, out)
    return out


def pretrain_tiny_base(
    model_cfg, out_dir: Path, *, progress_bar: bool = True, log_every: int = 10
) -> dict:
    """Pretrain the tiny base from ``model_cfg.pretrain.seed`` and save it in ``out_dir``; its
    progress is the ``base`` bar on a terminal, else a log line every ``log_every`` steps.

    The caller's global RNG states are left as they were (the run's stages seed themselves
    anyway; see ``mplus.pipeline.stage_seed``), so a cold cache changes nothing downstream.
    """
    from lightning.pytorch.utilities.seed import isolate_rng

    with isolate_rng():
        return _pretrain_tiny_base(model_cfg, out_dir, progress_bar, log_every)


def _pretrain_tiny_base(model_cfg, out_dir: Path, progress_bar: bool, log_every: int) -> dict:
    import lightning as L
    from transformers import MistralForCausalLM

    from mplus.console import stage_label
    from mplus.data.synthetic import SyntheticTask
    from mplus.models.tokenizer import train_tokenizer
    from mplus.modules.causal_lm import CausalLMModule, pack_documents
    from mplus.modules.progress import StageProgress, progress_callbacks

    arch, pt = model_cfg.arch, model_cfg.pretrain
    t0 = time.time()
    task = SyntheticTask(seed=pt.seed)
    docs = task.pretraining_corpus(pt.corpus_docs, split="pretrain")
    tokenizer = train_tokenizer(docs, arch.vocab_size)
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    rows = pack_documents(ids, tokenizer.eos_token_id, pt.seq_len)
    n_val = max(1, len(rows) // 50)
    train_rows, val_rows = rows[n_val:], rows[:n_val]

    L.seed_everything(pt.seed, workers=True, verbose=False)
    config = tiny_hf_config(
        arch,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = MistralForCausalLM(config)

    def loader(r, shuffle):
        ds = torch.utils.data.TensorDataset(r)
        return torch.utils.data.DataLoader(
            ds,
            batch_size=pt.batch_size,
            shuffle=shuffle,
            collate_fn=lambda b: {
                "input_ids": torch.stack([x[0] for x in b]),
                "labels": torch.stack([x[0] for x in b]),
            },
        )

    module = CausalLMModule(
        model,
        lr=pt.lr,
        weight_decay=0.0,
        warmup_steps=pt.warmup_steps,
        total_steps=pt.steps,
        prefix="base",
    )
    shown, bar = progress_callbacks(
        StageProgress(stage_label("base"), pt.steps), progress_bar=progress_bar, log_every=log_every
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=pt.steps,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        val_check_interval=None,
        check_val_every_n_epoch=None,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=bar,
        callbacks=shown,
    )
    trainer.fit(module, loader(train_rows, True))
    model.eval()
    with torch.no_grad():
        batch = val_rows[:64]
        val_loss = model(input_ids=batch, labels=batch).loss.item()

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = {
        "val_loss": val_loss,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens": int(min(pt.steps * pt.batch_size, len(train_rows)) * pt.seq_len),
        "seconds": round(time.time() - t0, 1),
        "docs": len(docs),
    }
    (out_dir / "base_info.json").write_text(json.dumps(info, indent=2))
    log.info("Tiny base ready: %s", info)
    return info
