"""What an `mlgo search` directory holds, and the checks that keep a resumed search, or training
from one, to results made from the same inputs.

    S/search.json            the search's identity: its SearchConfig, guide, COMDAT weighting and
                             the compile settings (problem, optimization level, extra flags, what
                             the measurement counts, the compiler), as `compile_settings` gives them
    S/modules/<module>.npz   one module's result; its metadata names the module and carries its
                             fingerprint: a hash of the identity above, the module's bitcode and its
                             recorded compile command
    S/.lock                  held (flock) by the search using the directory; the pid is in it

Resuming (the same command again, on the same -o):
  * other search settings or compile settings (another --gin_bindings, -O level, clang): refused
    with one line naming what differs, since every result in the directory was made under the
    old ones; use another -o.
  * a module whose bitcode or recorded command changed under the same name: its result is stale;
    a warning names it, the file is removed and the module is searched again (the others are
    kept, their fingerprints still match).
  * a result file that cannot be read (truncated, empty), names another module (copied under
    this module's name) or carries another fingerprint: the same, a warning and a new search.
  * another search holding the lock: refused with one line giving its pid.
Training from a search (`mlgo train --algorithm imitation --search S`) checks S against the
corpus before it writes anything (`check_search_for_corpus`): the compile settings must be the
training problem's and every result of a corpus module must carry that module's fingerprint;
otherwise one line says which module is stale and how to bring S up to date.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from corpus_tools.corpus import Module
from mlgo.workers.tasks import CallSites, ModuleOutcome
from mlgo_base import toolchain
from mlgo_base.errors import MlgoError, writing
from mlgo_base.files import (
    atomic_write_bytes,
    atomic_write_text,
    directory_lock,
    file_sha256,
)

log = logging.getLogger(__name__)

CONFIG = "search.json"
MODULES_DIR = "modules"
FAILURES = "failures.json"
LOCK = ".lock"
_META_KEYS = ("module", "fingerprint", "reward", "policy_total", "default_total",
              "num_decisions", "seconds")


class StaleResult(MlgoError):
    """A module's result file that cannot be reused: unreadable, another module's, or made from
    other inputs."""


def compile_settings(problem: Any) -> dict[str, Any]:
    """What a problem's compiles depend on beyond the module itself (`problem`: a Problem as
    gin configured it)."""
    return {"problem": problem.name, "opt_level": problem.opt_level or "",
            "extra_flags": list(problem.extra_flags),
            "measurement": problem.measurement_version, "compiler": toolchain.compiler_id()}


def module_fingerprint(module: Module, identity: Mapping[str, Any]) -> str:
    """A hash of the search's identity, the module's bitcode and its recorded command."""
    h = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for part in (module.name, file_sha256(module.bc_path), "\0".join(module.args())):
        h.update(b"\1" + part.encode())
    return h.hexdigest()


# -- per-module result files ---------------------------------------------------------------------
def result_path(out_dir: Path, module: str) -> Path:
    return Path(out_dir) / MODULES_DIR / (module + ".npz")


def save_result(out_dir: Path, out: ModuleOutcome, fingerprint: str) -> None:
    meta = {"module": out.module, "fingerprint": fingerprint, "reward": out.reward,
            "policy_total": out.policy_total, "default_total": out.default_total,
            "num_decisions": out.num_decisions, "seconds": out.seconds, **out.extra}
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    if out.actions is not None:
        arrays["actions"] = out.actions
        arrays["default_actions"] = out.default_actions
        arrays.update({"feature:" + k: v for k, v in out.features.items()})
        if out.call_sites is not None:
            arrays.update({"call_site:" + k: np.asarray(v) for k, v in vars(out.call_sites).items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(result_path(out_dir, out.module), buf.getvalue())


def load_result(path: Path, module: str | None = None,
                fingerprint: str | None = None) -> ModuleOutcome:
    """A result file; with `module` (and `fingerprint`), StaleResult unless it is that module's
    result made from those inputs."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict):
                raise ValueError("its metadata is not a JSON object")
            out = ModuleOutcome(meta["module"], True, reward=meta["reward"],
                                policy_total=meta["policy_total"],
                                default_total=meta["default_total"],
                                num_decisions=meta["num_decisions"], seconds=meta["seconds"],
                                extra={k: v for k, v in meta.items() if k not in _META_KEYS})
            if "actions" in z:
                out.actions = z["actions"]
                out.default_actions = z["default_actions"]
                out.features = {k.removeprefix("feature:"): z[k] for k in z.files
                                if k.startswith("feature:")}
                if "call_site:caller" in z:
                    out.call_sites = CallSites(*(z["call_site:" + k].tolist() for k in
                                                 ("caller", "callee", "ordinal", "loc")))
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise StaleResult(f"{path}: unreadable search result ({type(e).__name__}: {e})") from None
    if module is not None and out.module != module:
        raise StaleResult(f"{path}: holds the search result of {out.module}, not of {module}")
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise StaleResult(f"{path}: made from other inputs than {module}'s bitcode, command "
                          "and search settings now" if meta.get("fingerprint") else
                          f"{path}: has no fingerprint of its inputs")
    return out


def reusable_results(out_dir: Path, fingerprints: Mapping[str, str]) -> dict[str, ModuleOutcome]:
    """Each module's result that is still valid (module name -> its fingerprint); a stale one
    is reported, removed and left out, so the module is searched again."""
    found = {}
    for name, fingerprint in fingerprints.items():
        path = result_path(out_dir, name)
        if not path.is_file():
            continue
        try:
            found[name] = load_result(path, name, fingerprint)
        except StaleResult as e:
            log.warning("%s; searching %s again", e, name)
            with writing(path):
                path.unlink()
    return found


# -- the directory ---------------------------------------------------------------------------------
def read_config(out_dir: Path) -> dict[str, Any] | None:
    """S/search.json, None when missing; one MlgoError naming it when it is not a JSON object."""
    path = Path(out_dir) / CONFIG
    try:
        have = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise MlgoError(f"{path}: unreadable ({type(e).__name__}: {e}); restore it, or delete the "
                        "directory to search afresh") from None
    if not isinstance(have, dict):
        raise MlgoError(f"{path}: not a JSON object; restore it, or delete the directory to "
                        "search afresh")
    return have


def check_config(out_dir: Path, want: dict[str, Any]) -> None:
    """Refuse a directory holding a search with another identity; claim a new one."""
    have = read_config(out_dir)
    path = Path(out_dir) / CONFIG
    if have is None:
        atomic_write_text(path, json.dumps(want, indent=1) + "\n")
        return
    if not isinstance(have.get("settings"), dict):
        raise MlgoError(f"{path}: records no compile settings (written by an older mlgo), so its "
                        "results cannot be checked; use another -o")
    if have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        if "settings" in diff:
            s, w = have["settings"], want["settings"]
            diff.remove("settings")
            diff += [f"{k} {s.get(k)!r} -> {w.get(k)!r}" for k in sorted(set(s) | set(w))
                     if s.get(k) != w.get(k)]
        raise MlgoError(f"{path}: this directory holds a search with other settings "
                        f"({', '.join(diff)}); use another -o")


@contextmanager
def search_lock(out_dir: Path) -> Iterator[None]:
    """Hold S/.lock while searching: two searches on one directory would write the same trace
    and result files."""
    with directory_lock(Path(out_dir) / LOCK, f"{out_dir}: another search is using this "
                        "directory", "wait for it to finish or use another -o"):
        yield


def check_search_for_corpus(search: Path, modules: Sequence[Module], problem: Any
                            ) -> dict[str, str]:
    """Before training from `search`: its compile settings must be `problem`'s, and every
    result of one of `modules` must carry that module's fingerprint. Returns the fingerprints
    (module name -> fingerprint) of the modules it has a result for."""
    have = read_config(search)
    if have is None:
        raise MlgoError(f"{search}: not an `mlgo search` directory (no {CONFIG})")
    if not isinstance(have.get("settings"), dict):
        raise MlgoError(f"{search / CONFIG}: records no compile settings (written by an older "
                        "mlgo), so its results cannot be checked; search again into another "
                        "directory")
    want = compile_settings(problem)
    diff = [f"{k} {have['settings'].get(k)!r} here, {v!r} for training"
            for k, v in want.items() if have["settings"].get(k) != v]
    if diff:
        raise MlgoError(f"{search}: searched with other compile settings than this training "
                        f"uses ({'; '.join(diff)})")
    prints = {m.name: module_fingerprint(m, have) for m in modules
              if result_path(search, m.name).is_file()}
    if not prints:
        raise MlgoError(f"{search}: holds no search result for any module of this corpus")
    for name, fingerprint in prints.items():
        try:
            load_result(result_path(search, name), name, fingerprint)
        except StaleResult as e:
            raise MlgoError(f"{e}; run the same `mlgo search` on this corpus into {search} to "
                            "search the changed modules again") from None
    return prints
