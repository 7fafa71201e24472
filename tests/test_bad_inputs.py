"""Bad inputs through ``python -m mplus.train``: each is refused with exit status 2 and exactly one
line naming the key, file or line; the ones that need no model are refused before torch, transformers or
Lightning is imported (what makes them fast: seconds, not the tens a model load takes), build no
base model and write nothing but the run dir's logs. Malicious pickles (a checkpoint, a ``pytorch_model.bin``) are refused without being run.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_MODEL

HEAVY = ("torch", "transformers", "lightning")  # none imported before a no-model refusal
# imported by every interpreter here: a sitecustomize that records, at exit, which of HEAVY the
# command had imported (the heavy imports, not a wall-clock limit, are what a fast refusal means)
_RECORD_IMPORTS = """
import atexit, os, sys
def _record():
    with open(os.environ["MPLUS_IMPORTS_OUT"], "w") as f:
        f.write(" ".join(m for m in {heavy!r} if m in sys.modules))
atexit.register(_record)
"""
GOOD_ROW = {
    "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello, how can I help?",
    "rejected": "\n\nHuman: Hi there\n\nAssistant: Go away.",
}


class _Marker:
    """Unpickling this runs ``touch <path>``: what a malicious checkpoint does."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


# ---------------------------------------------------------------- the bad inputs


def _lightning_checkpoint(state_dict: dict, **extra) -> dict:
    """A Lightning checkpoint as mplus's stages write it (the keys the stage check reads are the
    real ones: ``tests`` of the stage detection on real checkpoints are in this file too)."""
    import torch

    return {
        "epoch": 0,
        "global_step": 4,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": OrderedDict((k, torch.ones(256)) for k in state_dict),
        "loops": {},
        "callbacks": {},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3}]}],
        "lr_schedulers": [{"base_lrs": [1e-3], "_lr_lambdas": [None]}],
        **extra,
    }


RM_KEYS = ["model.model.embed_tokens.weight", "model.model.norm.weight", "model.score.weight"]
SFT_KEYS = ["model.model.embed_tokens.weight", "model.lm_head.weight"]
DPO_KEYS = ["policy.model.embed_tokens.weight", "policy.lm_head.weight"]
PPO_KEYS = ["policy.model.embed_tokens.weight", "value_model.model.score.weight"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """Every bad input file, written once."""
    import torch
    from transformers import MistralConfig

    d = tmp_path_factory.mktemp("bad-inputs")
    files: dict[str, Path] = {"marker": d / "MARKER"}

    def put(name: str, data: bytes) -> None:
        (d / name).write_bytes(data)
        files[name] = d / name

    good = (json.dumps(GOOD_ROW) + "\n").encode()
    full = gzip.compress(good * 400)
    put("truncated.jsonl.gz", full[: len(full) // 2])
    put("non_utf8.jsonl", good + b'{"chosen": "caf\xe9", "rejected": "x"}\n')
    put("invalid_json.jsonl", good + b'{"chosen": \n')
    put("non_object.jsonl", good + b"[1, 2]\n")
    put("empty.jsonl", b"")
    same = {"chosen": GOOD_ROW["chosen"], "rejected": GOOD_ROW["chosen"]}
    put(
        "all_skipped.jsonl",
        b"".join(
            json.dumps(r).encode() + b"\n"
            for r in (
                same,
                {"chosen": "no assistant turn", "rejected": "x"},
                {"chosen": 3, "rejected": "x"},
            )
        ),
    )
    put("good.jsonl", good * 20)

    for stage, keys in (("rm", RM_KEYS), ("ppo", PPO_KEYS)):
        extra = {"mplus_ppo": {"ppo_step": 2}} if stage == "ppo" else {}
        torch.save(_lightning_checkpoint(keys, **extra), d / f"{stage}.ckpt")
        files[f"{stage}.ckpt"] = d / f"{stage}.ckpt"
    rm = (d / "rm.ckpt").read_bytes()
    put("truncated.ckpt", rm[: len(rm) * 2 // 3])
    flipped = bytearray(rm)
    flipped[len(rm) // 2 : len(rm) // 2 + 32] = b"\xff" * 32  # the zip's index stays intact
    put("flipped.ckpt", bytes(flipped))
    torch.save({"weights": torch.zeros(2)}, d / "not_mplus.ckpt")
    files["not_mplus.ckpt"] = d / "not_mplus.ckpt"
    torch.save(_lightning_checkpoint(RM_KEYS, evil=_Marker(files["marker"])), d / "malicious.ckpt")
    files["malicious.ckpt"] = d / "malicious.ckpt"
    # protocol 4: the global is imported with STACK_GLOBAL, its name pushed as strings
    torch.save(
        {"state_dict": {"model.score.weight": torch.zeros(1)}, "x": _Marker(files["marker"])},
        d / "malicious_p4.ckpt",
        pickle_protocol=4,
    )
    files["malicious_p4.ckpt"] = d / "malicious_p4.ckpt"

    model = d / "pickled_model"  # a model folder whose weights are a malicious pytorch_model.bin
    MistralConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=None,
    ).save_pretrained(model)
    torch.save({"model.embed_tokens.weight": _Marker(files["marker"])}, model / "pytorch_model.bin")
    files["pickled_model"] = model
    (d / "config_only").mkdir()
    (d / "config_only" / "config.json").write_text("{}")
    files["config_only"] = d / "config_only"
    put("a_file", b"not a directory")
    return files


# (id, overrides with {name} for the bad files and {tmp} for the test's tmp dir, words the one
# line must contain). None of them needs a model.
NO_MODEL_CASES = [
    # config mistakes: Hydra's composition, then the typed schema
    ("misspelt_key", ["algo.kl_coeff=0.1"], ["algo.kl_coeff", "+algo.kl_coeff=0.1"]),
    ("wrong_type", ["algo.steps=many"], ["algo.steps=many", "Integer"]),
    ("unknown_group_option", ["algo=ppoo"], ["algo/ppoo", "ppo, reinforce_pp, rloo, rm"]),
    ("bad_override_syntax", ["algo.steps=[1"], ["algo.steps=[1"]),
    ("out_of_range", ["algo.kl.coef=-1"], ["algo.kl.coef", ">= 0"]),
    ("missing_value", ["model.name=???"], ["model.name", "missing"]),
    ("empty_files_list", ["data=hh_rlhf", "data.files=[]"], ["data.files"]),
    # several reward models and the constraint (algo.rewards, algo.constraint)
    (
        "rewards_group_as_a_value",
        ["algo.rewards=two_heads"],
        ["algo.rewards=two_heads", "use algo/rewards=two_heads"],
    ),
    (
        "constraint_without_its_cost",
        ["algo.constraint.enabled=true"],
        ["algo.constraint.cost", "not in algo.rewards", "algo/rewards=two_heads"],
    ),
    (
        "constraint_leaves_nothing_to_maximise",
        ["algo/rewards=two_heads", "algo.constraint.enabled=true", "algo.rewards.helpful.weight=0"],
        ["algo.rewards", "every weight in the objective is 0"],
    ),
    (
        "bad_reward_name",
        ["+algo.rewards.no-dash={weight:1}"],
        ["algo.rewards.no-dash", "letters, digits and _"],
    ),
    ("bad_lambda", ["algo.constraint.lambda_init=0"], ["algo.constraint.lambda_init", "> 0"]),
    (
        "missing_reward_path",
        ["algo/rewards=two_heads", "algo.rewards.helpful.path={tmp}/no-rm"],
        ["algo.rewards.helpful.path={tmp}/no-rm"],
    ),
    # path mistakes
    ("missing_reward_model", ["algo.reward_model={tmp}/no-rm"], ["algo.reward_model={tmp}/no-rm"]),
    (
        "reward_model_not_exported",
        ["algo.reward_model={config_only}"],
        ["algo.reward_model={config_only}", "no model weights"],
    ),
    (
        "missing_base_model",
        ["model.name_or_path={tmp}/no-model"],
        ["model.name_or_path={tmp}/no-model", "no such directory"],
    ),
    (
        "pickled_base_model",
        ["model.name_or_path={pickled_model}"],
        ["model.name_or_path={pickled_model}", "pytorch_model.bin", "model.allow_pickle=true"],
    ),
    (
        "missing_checkpoint",
        ["algo=rm", "ckpt_path={tmp}/no.ckpt"],
        ["ckpt_path={tmp}/no.ckpt", "no such file"],
    ),
    (
        "wrong_stage_checkpoint",
        ["ckpt_path={rm.ckpt}"],
        ["ckpt_path={rm.ckpt}", "rm stage", "algo=ppo"],
    ),
    (
        "wrong_stage_checkpoint_ppo_to_rm",
        ["algo=rm", "ckpt_path={ppo.ckpt}"],
        ["ckpt_path={ppo.ckpt}", "ppo stage", "algo=rm"],
    ),
    (
        "truncated_checkpoint",
        ["algo=rm", "ckpt_path={truncated.ckpt}"],
        ["ckpt_path={truncated.ckpt}", "truncated"],
    ),
    (
        "corrupt_checkpoint",
        ["algo=rm", "ckpt_path={flipped.ckpt}"],
        ["ckpt_path={flipped.ckpt}", "corrupt"],
    ),
    (
        "not_an_mplus_checkpoint",
        ["algo=rm", "ckpt_path={not_mplus.ckpt}"],
        ["ckpt_path={not_mplus.ckpt}", "not an mplus training checkpoint"],
    ),
    (
        "malicious_checkpoint",
        ["algo=rm", "ckpt_path={malicious.ckpt}"],
        ["ckpt_path={malicious.ckpt}", "posix.system"],
    ),
    (
        "malicious_checkpoint_protocol_4",
        ["algo=rm", "ckpt_path={malicious_p4.ckpt}"],
        ["ckpt_path={malicious_p4.ckpt}", "posix.system"],
    ),
    ("checkpoint_for_algo_none", ["algo=none", "ckpt_path={rm.ckpt}"], ["ckpt_path=", "algo=none"]),
    ("hydra_run_dir_is_a_file", ["hydra.run.dir={a_file}"], ["hydra.run.dir", "{a_file}"]),
    ("hydra_run_dir_under_a_file", ["hydra.run.dir={a_file}/run"], ["hydra.run.dir", "{a_file}"]),
    ("run_dir_is_a_file", ["run_dir={a_file}"], ["run_dir={a_file}", "is a file"]),
    # data files (data=hh_rlhf data.files=<path>)
    (
        "data_missing",
        ["data=hh_rlhf", "data.files={tmp}/no.jsonl"],
        ["{tmp}/no.jsonl", "not found"],
    ),
    (
        "data_truncated_gz",
        ["data=hh_rlhf", "data.files={truncated.jsonl.gz}"],
        ["{truncated.jsonl.gz}", "cannot read"],
    ),
    (
        "data_non_utf8",
        ["data=hh_rlhf", "data.files={non_utf8.jsonl}"],
        ["{non_utf8.jsonl}:2:", "not UTF-8"],
    ),
    (
        "data_invalid_json",
        ["data=hh_rlhf", "data.files={invalid_json.jsonl}"],
        ["{invalid_json.jsonl}:2:", "invalid JSON"],
    ),
    (
        "data_non_object_line",
        ["data=hh_rlhf", "data.files={non_object.jsonl}"],
        ["{non_object.jsonl}:2:", "expected a JSON object, got list"],
    ),
    (
        "data_empty_file",
        ["data=hh_rlhf", "data.files={empty.jsonl}"],
        ["no usable pairs in {empty.jsonl}", "skipped: nothing"],
    ),
    (
        "data_every_row_skipped",
        ["data=hh_rlhf", "data.files={all_skipped.jsonl}"],
        [
            "no usable pairs in {all_skipped.jsonl}",
            "identical: 1",
            "no_assistant_turn: 1",
            "malformed: 1",
        ],
    ),
    (
        "data_unknown_subset",
        ["data=hh_rlhf", "+data.mix.harmles-base=1.0"],
        ["data.mix.harmles-base", "harmless-base"],
    ),
]
MALICIOUS = {"pickled_base_model", "malicious_checkpoint", "malicious_checkpoint_protocol_4"}


def _fill(text: str, files: dict[str, Path], tmp: Path) -> str:
    for k, v in {**files, "tmp": tmp}.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def _train(overrides: list[str], *, run_dir: Path, cache_dir: Path, python_flags=(), record=None):
    """Run ``python -m mplus.train``; with ``record`` (a folder), write there which of HEAVY the
    command imported (``imports.txt``)."""
    cmd = [
        sys.executable,
        *python_flags,
        "-m",
        "mplus.train",
        *TEST_MODEL,
        f"cache_dir={cache_dir}",
        "progress_bar=false",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    if record is not None:
        record.mkdir(parents=True, exist_ok=True)
        (record / "sitecustomize.py").write_text(_RECORD_IMPORTS.format(heavy=HEAVY))
        path = os.pathsep.join(p for p in (str(record), env.get("PYTHONPATH")) if p)
        env = {**env, "PYTHONPATH": path, "MPLUS_IMPORTS_OUT": str(record / "imports.txt")}
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**env, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, time.perf_counter() - t0


def _lines(proc) -> list[str]:
    return [x for x in (proc.stdout + proc.stderr).splitlines() if x.strip()]


def _written(run_dir: Path) -> list[str]:
    """Files in the run dir besides its logs (Hydra's .hydra/ and train.log)."""
    if not run_dir.is_dir():
        return []
    return sorted(
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != "train.log" and ".hydra" not in p.relative_to(run_dir).parts
    )


@pytest.mark.parametrize("case", NO_MODEL_CASES, ids=[c[0] for c in NO_MODEL_CASES])
def test_bad_input_is_one_line_and_exit_2_before_any_model(case, bad, tmp_path):
    name, overrides, words = case
    files = dict(bad)
    bad["marker"].unlink(missing_ok=True)
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    record = tmp_path / "record"
    proc, seconds = _train(
        [_fill(o, files, tmp_path) for o in overrides],
        run_dir=run_dir,
        cache_dir=cache,
        record=record,
    )
    out = proc.stdout + proc.stderr
    lines = _lines(proc)
    print(f"{name}: exit {proc.returncode} in {seconds:.2f}s: {lines}")
    assert proc.returncode == 2, out[-3000:]
    assert len(lines) == 1 and "Traceback" not in out, out[-3000:]
    for w in words:
        assert _fill(w, files, tmp_path) in lines[0], lines[0]
    assert (record / "imports.txt").read_text() == "", f"{name} imported heavy modules"
    assert not cache.exists(), "a base model was built"
    assert _written(run_dir) == []
    if name in MALICIOUS:
        assert not bad["marker"].exists(), "the malicious pickle ran"
    if name.startswith("hydra_run_dir"):
        assert bad["a_file"].read_bytes() == b"not a directory"


def test_refusals_before_a_model_import_no_torch(bad, tmp_path):
    """The checks that need no model run before torch, transformers or Lightning load."""
    for overrides in (
        ["algo.kl.coef=-1"],
        ["algo=rm", f"ckpt_path={bad['malicious.ckpt']}"],
        ["data=hh_rlhf", f"data.files={bad['empty.jsonl']}"],
    ):
        proc, _ = _train(
            overrides,
            run_dir=tmp_path / "run",
            cache_dir=tmp_path / "cache",
            python_flags=("-X", "importtime"),
        )
        assert proc.returncode == 2, proc.stderr[-3000:]
        imported = {x.rsplit("|", 1)[-1].strip() for x in proc.stderr.splitlines() if "|" in x}
        assert not imported & {"torch", "transformers", "lightning"}, overrides


# ---------------------------------------------------------------- the ones that need the model


def test_every_pair_too_long_is_refused_naming_the_file(run_train, bad):
    proc, run_dir = run_train(
        "algo=rm",
        "data=hh_rlhf",
        f"data.files={bad['good.jsonl']}",
        "data.max_length=9",
        check=False,
    )
    lines = _lines(proc)
    assert proc.returncode == 2 and len(lines) == 1, lines[-20:]
    assert f"no usable pairs in {bad['good.jsonl']} (skipped: too_long: 20)" in lines[0]
    assert "data.max_length" in lines[0]
    assert _written(run_dir) == []


def test_nan_in_the_reward_model_is_one_line_naming_the_step(run_train):
    proc, run_dir = run_train(
        "algo=rm",
        "algo.lr=1e30",
        "algo.max_steps=5",
        "algo.val_every=5",
        "data.num_train_pairs=64",
        "data.num_val_pairs=16",
        check=False,
    )
    out = proc.stdout + proc.stderr
    errors = [x for x in _lines(proc) if "ERROR" in x]
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out and len(errors) == 1, out[-3000:]
    assert "rm/train_loss" in errors[0] and "step" in errors[0]
    assert not (run_dir / "reward_model").exists()


# ---------------------------------------------------------------- loading code, in process


def _torch_load_calls():
    for f in sorted((REPO / "mplus").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and ast.unparse(node.func.value) in ("torch", "torch.serialization")
            ):
                yield f, node


def test_every_torch_load_in_mplus_passes_weights_only_true():
    calls = list(_torch_load_calls())
    assert calls  # preflight's own: torch's verdict on an unusual checkpoint
    # every textual torch.load( is a call the AST sees, or says weights_only=True (docs)
    call_lines = {(f, node.lineno) for f, node in calls}
    for f in (REPO / "mplus").rglob("*.py"):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if "torch.load(" in line and (f, i) not in call_lines:
                assert "torch.load(weights_only=True)" in line, f"{f}:{i}: {line.strip()}"
    for f, node in calls:
        kw = {k.arg: k.value for k in node.keywords}
        value = kw.get("weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, f"{f}:{node.lineno}"
    assert not [
        f for f in (REPO / "mplus").rglob("*.py") if "from torch import load" in f.read_text()
    ]


def test_every_lightning_resume_passes_weights_only_true():
    for f in sorted((REPO / "mplus").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if (
                isinstance(node, ast.Call)
                and any(k.arg == "ckpt_path" for k in node.keywords)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "fit"
            ):
                kw = {k.arg: k.value for k in node.keywords}
                value = kw.get("weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, f"{f}:{node.lineno}"


def test_weights_load_from_safetensors_unless_allow_pickle():
    from mplus.models.builders import from_pretrained_kwargs

    assert from_pretrained_kwargs("float32", "sdpa")["use_safetensors"] is True
    assert from_pretrained_kwargs("float32", "sdpa", allow_pickle=True)["use_safetensors"] is None


def test_a_pickled_model_never_runs(bad):
    """Refused without model.allow_pickle; with it, transformers unpickles weights-only."""
    import pickle

    from mplus.config import ModelConfig
    from mplus.errors import ModelFilesError, UserError
    from mplus.models.builders import load_causal_lm, load_reward_model

    bad["marker"].unlink(missing_ok=True)
    path = str(bad["pickled_model"])
    for load in (load_causal_lm, load_reward_model):
        with pytest.raises(ModelFilesError, match="model.allow_pickle=true") as info:
            load(path, ModelConfig(name="x", name_or_path=path))
        assert isinstance(info.value, UserError)
    with pytest.raises(pickle.UnpicklingError):
        load_causal_lm(path, ModelConfig(name="x", name_or_path=path, allow_pickle=True))
    assert not bad["marker"].exists()


@pytest.mark.parametrize(
    "stage,keys", [("rm", RM_KEYS), ("sft", SFT_KEYS), ("dpo", DPO_KEYS), ("ppo", PPO_KEYS)]
)
def test_checkpoint_stage_from_its_keys(stage, keys, tmp_path):
    import torch

    from mplus.errors import CheckpointError
    from mplus.preflight import check_checkpoint

    path = tmp_path / "last.ckpt"
    torch.save(_lightning_checkpoint(keys), path)
    check_checkpoint(str(path), stage)
    for other in {"rm", "sft", "dpo", "ppo"} - {stage}:
        with pytest.raises(CheckpointError, match=f"the {stage} stage"):
            check_checkpoint(str(path), other)
    check_checkpoint("last", stage)  # ckpt_path=last: found in the run dir when the stage starts


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_sharded_checkpoint_is_inspected_without_unpickling(tmp_path):
    import torch
    import torch.distributed.checkpoint as dcp

    from mplus.errors import CheckpointError
    from mplus.preflight import check_checkpoint

    ckpt = tmp_path / "last.ckpt"
    dcp.save(
        {"state_dict": {k: torch.zeros(2) for k in PPO_KEYS}}, checkpoint_id=ckpt, no_dist=True
    )
    with pytest.raises(CheckpointError, match="no meta.pt"):
        check_checkpoint(str(ckpt), "ppo")
    torch.save({"mplus_ppo": {"ppo_step": 2}, "global_step": 4}, ckpt / "meta.pt")
    check_checkpoint(str(ckpt), "ppo")
    with pytest.raises(CheckpointError, match="the ppo stage"):
        check_checkpoint(str(ckpt), "dpo")


def test_user_errors_are_one_family():
    from mplus.config import ConfigError
    from mplus.data.hh import DataFileError
    from mplus.errors import CheckpointError, DataError, ModelFilesError, UserError

    for cls in (ConfigError, DataFileError, DataError, CheckpointError, ModelFilesError):
        assert issubclass(cls, UserError)
    for cls in (ConfigError, DataFileError):  # still caught where ValueError was
        assert issubclass(cls, ValueError)


def test_preflight_hands_its_rows_to_the_data_build(bad):
    from mplus.data import hh

    path = bad["good.jsonl"]
    rows = hh.read_ahead(path)
    assert hh.read_jsonl_once(path) is rows  # handed over, not read again
    assert hh.read_jsonl_once(path) is not rows  # and not kept: a second call reads the file
    assert hh.read_jsonl_once(path) == rows


def test_run_raises_the_user_error(tmp_path):
    """``mplus.train.run`` (notebooks) raises instead of exiting."""
    from mplus.errors import CheckpointError
    from mplus.train import run

    with pytest.raises(CheckpointError, match="no such file"):
        run(
            [
                f"hydra.run.dir={tmp_path / 'run'}",
                f"cache_dir={tmp_path / 'cache'}",
                "algo=rm",
                f"ckpt_path={tmp_path / 'no.ckpt'}",
            ]
        )
    assert not (tmp_path / "cache").exists()
