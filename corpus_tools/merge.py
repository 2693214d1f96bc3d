"""Merging corpora: the union of several, deduplicated by bitcode, optionally cut to some
projects or named modules (how training, validation, held-out and searched corpora are made from
whole ones)."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from corpus_tools.corpus import DESCRIPTION, Corpus, recorded_llvm_version, write_description
from corpus_tools.extract_pipeline import read_existing_description
from mlgo_base.errors import CorpusError
from mlgo_base.files import file_sha256


@dataclass
class MergeSummary:
    out_dir: Path
    added: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)

    def format(self) -> str:
        return (f"{self.out_dir}: {len(self.added)} modules added, "
                f"{len(self.already_present)} already present, "
                f"{len(self.duplicates)} duplicates (identical bitcode) dropped")


def _link_or_copy(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.merge.tmp")
    tmp.unlink(missing_ok=True)
    if link:
        try:
            os.link(src, tmp)
        except OSError as e:
            # EXDEV: another filesystem; EPERM: links not allowed there. Copy instead, as
            # documented for `link=True`.
            if e.errno not in (errno.EXDEV, errno.EPERM):
                raise
            shutil.copyfile(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def merge_corpora(inputs: Iterable[Path | str], out_dir: Path | str, *, link: bool = True,
                  progress: bool = False, keep_projects: Collection[str] | None = None,
                  drop_projects: Collection[str] = (),
                  keep_modules: Collection[str] | None = None) -> MergeSummary:
    """Union of several corpora into `out_dir` (which may already hold a corpus).

    Files are hard-linked when possible (`link`), else copied. Bitcode already present
    under another name is dropped as a duplicate; the same name with different content
    (bitcode or command) in two inputs is an error. `keep_projects` (if given) keeps only those
    projects of the inputs and `drop_projects` drops some: how a training, validation or
    held-out corpus is cut from whole ones. A named project no input holds is an error (a typo
    would otherwise leave a held-out project in training). `keep_modules` (if given) keeps only
    the modules of those names, e.g. the hot modules a search covers; likewise a name no input
    holds is an error."""
    inputs = [Path(i) for i in inputs]
    out_dir = Path(out_dir)
    corpora = [Corpus.load(i) for i in inputs]
    named = set(keep_projects or ()) | set(drop_projects)
    unknown = sorted(named - {m.project for c in corpora for m in c.modules})
    if unknown:
        raise CorpusError(f"no input corpus ({', '.join(map(str, inputs))}) holds project(s) "
                          f"{', '.join(unknown)}")
    if keep_modules is not None:
        missing = sorted(set(keep_modules) - {m.name for c in corpora for m in c.modules})
        if missing:
            raise CorpusError(f"no input corpus ({', '.join(map(str, inputs))}) holds module(s) "
                              f"{', '.join(missing)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = MergeSummary(out_dir)
    desc = read_existing_description(out_dir)
    modules: list[str] = []
    projects: dict[str, str] = {}
    origin: dict[str, str] = {}
    by_digest: dict[str, str] = {}
    # The merged corpus keeps one level: the first non-empty corpus's, which every other must
    # share (one corpus, one level; see _check_same_level).
    level: str | None = desc.get("opt_level") if desc.get("modules") else None
    level_from = str(out_dir)
    # And one LLVM version (corpus_tools/corpus.py): the existing output's, else the first
    # non-empty input's.
    version: int | None = (recorded_llvm_version(desc, out_dir / DESCRIPTION)
                           if desc.get("modules") else None)
    version_from = str(out_dir)
    origins: dict[str, dict] = dict(desc.get("origins") or {})
    if desc:
        existing = Corpus.load(out_dir)
        for m in existing.modules:
            modules.append(m.name)
            projects[m.name] = m.project
            origin[m.name] = str(out_dir)
            by_digest.setdefault(file_sha256(m.bc_path), m.name)
    digest_of = {name: d for d, name in by_digest.items()}
    for inp, corpus in zip(inputs, corpora, strict=True):
        if inp.resolve() == out_dir.resolve():
            continue
        corpus.modules = [m for m in corpus.modules if m.project not in drop_projects
                          and (keep_projects is None or m.project in keep_projects)
                          and (keep_modules is None or m.name in keep_modules)]
        if corpus.modules:
            if version is None:
                version, version_from = corpus.llvm_version, str(inp)
            elif corpus.llvm_version != version:
                raise CorpusError(
                    f"{inp} holds IR of LLVM {corpus.llvm_version} but {version_from} of LLVM "
                    f"{version}: corpora of different LLVM versions cannot be merged")
            # A corpus that records no level (made by hand or before levels were recorded)
            # makes the merged one unrecorded too; the problems still check the IR itself.
            theirs = corpus.opt_level or "unrecorded"
            if level is None or "unrecorded" in (level, theirs):
                if level != "unrecorded":
                    level, level_from = theirs, str(inp)
            elif theirs != level:
                raise CorpusError(
                    f"{inp} holds IR at {theirs} but {level_from} at {level}: corpora of "
                    "different optimization levels cannot be merged (one corpus, one level)")
        kept_projects = {m.project for m in corpus.modules}
        origins.update((p, o) for p, o in (corpus.extra.get("origins") or {}).items()
                       if p in kept_projects)
        for m in corpus.modules:
            digest = file_sha256(m.bc_path)
            if m.name in origin:
                out_bc = out_dir / (m.name + ".bc")
                same = (digest_of.get(m.name) or file_sha256(out_bc)) == digest and \
                    (out_dir / (m.name + ".cmd")).read_bytes() == m.cmd_path.read_bytes()
                if not same:
                    raise CorpusError(
                        f"module {m.name!r} is in both {origin[m.name]} and {inp} with "
                        "different bitcode or command; rename one project before merging")
                summary.already_present.append(m.name)
                continue
            kept = by_digest.get(digest)
            if kept is not None:
                summary.duplicates[m.name] = kept
                continue
            # Names were checked at load; this also catches a symlink inside the output.
            dest = (out_dir / m.name).parent.resolve()
            if not dest.is_relative_to(out_dir.resolve()):
                raise CorpusError(f"{out_dir / m.name}: leads outside {out_dir} (to {dest}); "
                                  "refusing to write there")
            _link_or_copy(m.bc_path, out_dir / (m.name + ".bc"), link)
            _link_or_copy(m.cmd_path, out_dir / (m.name + ".cmd"), link)
            modules.append(m.name)
            projects[m.name] = m.project
            origin[m.name] = str(inp)
            by_digest[digest] = m.name
            digest_of[m.name] = digest
            summary.added.append(m.name)
    extra: dict = {"origins": origins} if origins else {}
    if level is not None and level != "unrecorded":
        extra["opt_level"] = level
    if version is not None:
        extra["llvm_version"] = version
    write_description(out_dir, modules, projects, **extra)
    return summary
