"""Recipes of Debian source packages for `mlgo corpus debian` (corpus_tools/debian.py).

Each package has a recipe in corpus_tools/debian_recipes/<package>.toml (data, not code, shipped
as package data; third_party/debian in the checkout links to the same folder); a user's own
recipe file, in the same format, is given with `--recipe FILE`:

    package = "lua5.4"            # source package name
    language = "c"                # "c" or "c++" (what most of its modules are)
    build = "debian-rules"        # run the package's own `debian/rules build-arch`, or
                                  # "steps": run `steps` (shell lines) in the unpacked tree
    steps = []                    # only with build = "steps"
    build_deps = "all"            # `apt-get build-dep --arch-only`, or a list of packages
    exclude = ["debian/32/*"]     # globs on source paths (relative to the unpacked tree)
    env = {}                      # extra environment for the build
    build_timeout = 3600          # seconds
    notes = "..."                 # free text for people
    [tested]                      # what the recipe gave when it was last run (informational)
    modules = 34
    build_seconds = 60
"""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from mlgo_base.errors import CorpusError

# Package data, so a wheel install can build corpora too. pip installs packages as directories.
RECIPES_DIR = Path(str(importlib.resources.files("corpus_tools") / "debian_recipes"))
BUILD_TIMEOUT = 3600.0
_BUILD_KINDS = ("debian-rules", "steps")
_RECIPE_KEYS = {"package", "language", "build", "steps", "build_deps", "exclude", "env",
                "tested", "notes", "build_timeout"}


@dataclass(frozen=True)
class Recipe:
    package: str
    language: str
    build: str = "debian-rules"
    steps: tuple[str, ...] = ()
    build_deps: str | tuple[str, ...] = "all"
    exclude: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    tested: dict = field(default_factory=dict)
    build_timeout: float = BUILD_TIMEOUT
    source: Path | None = None  # the recipe file


def parse_recipe(path: Path | str) -> Recipe:
    """Read and validate one recipe file; errors name the file and the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise CorpusError(f"{path}: recipe not found") from e
    except tomllib.TOMLDecodeError as e:
        raise CorpusError(f"{path}: not valid TOML ({e})") from e
    unknown = set(data) - _RECIPE_KEYS
    if unknown:
        raise CorpusError(f"{path}: unknown key(s) {sorted(unknown)}")

    def need(key: str, kind: type) -> object:
        if key not in data:
            raise CorpusError(f"{path}: missing '{key}'")
        if not isinstance(data[key], kind):
            raise CorpusError(f"{path}: '{key}' must be a {kind.__name__}")
        return data[key]

    package = need("package", str)
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", package):
        raise CorpusError(f"{path}: {package!r} is not a Debian source package name")
    language = need("language", str)
    if language not in ("c", "c++"):
        raise CorpusError(f"{path}: 'language' must be \"c\" or \"c++\", not {language!r}")
    build = data.get("build", "debian-rules")
    if build not in _BUILD_KINDS:
        raise CorpusError(f"{path}: 'build' must be one of {_BUILD_KINDS}, not {build!r}")
    steps = data.get("steps", [])
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise CorpusError(f"{path}: 'steps' must be a list of shell command strings")
    if build == "steps" and not steps:
        raise CorpusError(f"{path}: build = \"steps\" needs a non-empty 'steps' list")
    if build != "steps" and steps:
        raise CorpusError(f"{path}: 'steps' is only used with build = \"steps\"")
    deps = data.get("build_deps", "all")
    if deps != "all" and not (isinstance(deps, list) and all(isinstance(d, str) for d in deps)):
        raise CorpusError(f"{path}: 'build_deps' must be \"all\" or a list of package names")
    exclude = data.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
        raise CorpusError(f"{path}: 'exclude' must be a list of glob strings")
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise CorpusError(f"{path}: 'env' must be a table of strings")
    tested = data.get("tested", {})
    if not isinstance(tested, dict):
        raise CorpusError(f"{path}: 'tested' must be a table")
    timeout = data.get("build_timeout", BUILD_TIMEOUT)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise CorpusError(f"{path}: 'build_timeout' must be a positive number of seconds")
    return Recipe(package, language, build, tuple(steps),
                  "all" if deps == "all" else tuple(deps), tuple(exclude), dict(env),
                  dict(tested), float(timeout), path)


def recipe_path(package: str, recipes_dir: Path = RECIPES_DIR) -> Path:
    return recipes_dir / f"{package}.toml"


def load_recipe(package: str, recipes_dir: Path = RECIPES_DIR) -> Recipe:
    path = recipe_path(package, recipes_dir)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in recipes_dir.glob("*.toml"))) or "none"
        raise CorpusError(f"no recipe for Debian package {package!r} ({path} missing); "
                          f"known: {known}")
    recipe = parse_recipe(path)
    if recipe.package != package:
        raise CorpusError(f"{path}: 'package' is {recipe.package!r}, expected {package!r}")
    return recipe


def all_recipes(recipes_dir: Path = RECIPES_DIR) -> list[Recipe]:
    recipes = [parse_recipe(p) for p in sorted(recipes_dir.glob("*.toml"))]
    if not recipes:  # an install without its package data must not look like "no packages"
        raise CorpusError(f"{recipes_dir}: no Debian recipes (*.toml) found")
    return recipes
