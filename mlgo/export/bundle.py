"""`mlgo export`: a policy directory -> what an LLVM build consumes.

    OUT/saved_model/     TF SavedModel in LLVM's signature (one input per feature, advice output)
    OUT/aot/model.h      XLA AOT (`saved_model_cli aot_compile_cpu`), class llvm::InlinerSizeModel
    OUT/aot/model.o      or llvm::RegAllocEvictModel, as LLVM's release mode expects
    OUT/manifest.json    problem, features, compiler it was trained with, corpus, validation

A policy whose validation result is worse than the default heuristic is refused unless
`force` is set, and then the manifest says so."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from mlgo_base import toolchain
from mlgo_base.errors import MlgoError
from mlgo_base.files import atomic_write_text
from mlgo_base.process import run

# The generated class names LLVM's release-mode advisors include (InlinerSizeModel.h,
# RegAllocEvictModel.h) when built with -DLLVM_INLINER_MODEL_PATH / -DLLVM_RAEVICT_MODEL_PATH.
AOT_CLASS = {"inlining": "llvm::InlinerSizeModel", "regalloc": "llvm::RegAllocEvictModel"}
CMAKE_VAR = {"inlining": "LLVM_INLINER_MODEL_PATH", "regalloc": "LLVM_RAEVICT_MODEL_PATH"}


def validation_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    v = meta.get("validation")
    return v if isinstance(v, dict) and "relative_change" in v else None


def saved_model_cli() -> str:
    path = Path(sys.executable).parent / "saved_model_cli"
    if path.is_file():
        return str(path)
    found = shutil.which("saved_model_cli")
    if not found:
        raise MlgoError("saved_model_cli not found (it comes with the tensorflow package: "
                        "pip install 'mlgo[train]')")
    return found


def aot_compile(saved_model: Path, out_dir: Path, cpp_class: str, timeout: float = 600) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [saved_model_cli(), "aot_compile_cpu", "--dir", str(saved_model), "--tag_set", "serve",
           "--signature_def_key", "action", "--output_prefix", str(out_dir / "model"),
           "--cpp_class", cpp_class]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run(cmd, what=f"{saved_model}: XLA AOT compilation", timeout=timeout, env=env)
    made = [out_dir / n for n in ("model.h", "model.o", "model_metadata.o")]
    missing = [p.name for p in made if not p.is_file()]
    if missing:
        raise MlgoError(f"{out_dir}: saved_model_cli did not write {missing}")
    return made


def export_policy(policy_dir: Path, out: Path, *, aot: bool = True, force: bool = False) -> dict[str, Any]:
    from mlgo.policies.policy_dir import load_policy
    from mlgo.policies.saved_model import export_saved_model

    net, params, meta = load_policy(policy_dir)
    val = validation_of(meta)
    worse = val is not None and val["relative_change"] > 0
    if worse and not force:
        raise MlgoError(
            f"{policy_dir}: this policy is {100 * val['relative_change']:+.2f}% worse than the "
            "default heuristic on its validation split; refusing to export (use --force to "
            "export it anyway, flagged in the manifest)")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    export_saved_model(net, params, out / "saved_model")
    artifacts = ["saved_model"]
    if aot:
        made = aot_compile(out / "saved_model", out / "aot", AOT_CLASS[net.problem])
        artifacts += [str(p.relative_to(out)) for p in made]
    manifest = {
        "problem": net.problem,
        "policy": str(Path(policy_dir).resolve()),
        "features": [f.to_json() for f in net.features],
        "advice": net.advice.to_json(),
        "compiler": _compiler_version(),
        "trained_with": {k: meta.get(k) for k in ("algorithm", "corpus", "seed", "warmstart",
                                                    "train_modules", "validation_modules",
                                                    "iteration") if k in meta},
        "validation": val,
        "worse_than_default": worse,
        "artifacts": artifacts,
        "aot_class": AOT_CLASS[net.problem] if aot else None,
        "llvm_cmake": f"-D{CMAKE_VAR[net.problem]}={(out / 'saved_model').resolve()} "
                      "-DTENSORFLOW_AOT_PATH=$(python3 -c 'import tensorflow, os; "
                      "print(os.path.dirname(tensorflow.__file__))')",
        "export_seconds": round(time.monotonic() - t0, 2),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def _compiler_version() -> str:
    try:
        return f"clang {toolchain.clang().version}"
    except MlgoError:
        return f"unknown (clang-{toolchain.llvm_major()} not found)"
