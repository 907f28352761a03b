"""Validated notebook parameters.

Every notebook has a `parameters` cell with two plain values, `profile` and `params`, that papermill can
replace. The next cell turns them into a frozen dataclass:

    cfg = study.Config.load(profile, params)

`load` starts from the dataclass defaults, applies `notebooks/params/<notebook>/<profile>.yaml`, then the
user's `params` dict, and validates every value before any work starts. Each field declares its constraints
with `param(...)`; a bad value raises one `ConfigError` whose single line names the parameter and what is
allowed. The same check runs in `python -m lib.run` before a kernel is even started.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from lib.paths import PARAMS_DIR

PROFILES = ("smoke", "tiny", "local", "paper")
_YAML_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
_ASSIGNMENT = re.compile(r"\s+(?=[A-Za-z_][A-Za-z0-9_]*=)")  # where one `k=v k2=[a, b]` string splits


# What a kernel's namespace holds besides the notebook's own names (IPython's), and the value types papermill injects
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
_PLAIN = (bool, int, float, str, list, dict, tuple, type(None))


class ConfigError(ValueError):
    """A parameter is unknown, of the wrong type or out of range. The message is one line."""


def _yaml(text: str, where: str):
    """yaml.safe_load, its errors turned into one ConfigError line naming `where` and the position."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}") from None


def param(default, *, lo=None, hi=None, choices=None, doc: str = ""):
    """A config field with a default and its allowed values (`lo <= v <= hi`, or one of `choices`)."""
    if isinstance(default, list):
        default = tuple(default)
    meta = {"lo": lo, "hi": hi, "choices": tuple(choices) if choices else None, "doc": doc}
    return field(default=default, metadata=meta)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(name: str, value: Any, tp) -> Any:
    """Check `value` against the annotation `tp`; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"parameter {name!r} = {value!r} has the wrong type: expected {_type_name(tp)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"parameter {name!r} = {value!r} has the wrong type: expected a list")
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        return tuple(_coerce(f"{name}[{i}]", v, item_tp) for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML_FLOAT.match(value):
        value = float(value)  # YAML 1.1 reads `1e-3` (no dot) as a string
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"parameter {name!r} = {value!r} is not allowed: it must be a finite number")
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(
            f"parameter {name!r} = {value!r} has the wrong type: expected {_type_name(tp)}, got {type(value).__name__}")
    return value


def _check_range(name: str, value: Any, meta: dict) -> None:
    values = value if isinstance(value, tuple) else (value,)
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    for v in values:
        if v is None:
            continue
        if choices is not None and v not in choices:
            raise ConfigError(f"parameter {name!r} = {v!r} is not allowed: choose one of {', '.join(map(repr, choices))}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bounds = f"{lo if lo is not None else '-inf'} <= {name} <= {hi if hi is not None else 'inf'}"
            raise ConfigError(f"parameter {name!r} = {v!r} is out of range: allowed {bounds}")


@dataclass(frozen=True)
class Config:
    """Base of every notebook's config. Subclasses set `notebook` and declare fields with `param`."""

    notebook: ClassVar[str] = ""
    profile: str = param("tiny", choices=PROFILES, doc="which settings file in notebooks/params/ to start from")
    seed: int = param(0, lo=0, hi=2**31 - 1, doc="seed of the first run; further seeds count up from it")
    recompute: bool = param(False, doc="rebuild cached artifacts instead of loading them")

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(f.name, getattr(self, f.name), hints[f.name])
            _check_range(f.name, value, f.metadata)
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks of a subclass; raise ConfigError."""

    @property
    def seeds(self) -> list[int]:
        """seed, seed + 1, ...: one per run (`n_seeds` of them where the subclass has that field, else one)."""
        return [self.seed + i for i in range(getattr(self, "n_seeds", 1))]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def profile_values(cls, profile: str) -> dict:
        """The values in `notebooks/params/<notebook>/<profile>.yaml` (empty if the file does not exist)."""
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
        path = PARAMS_DIR / cls.notebook / f"{profile}.yaml"
        if not path.exists():
            if path.parent.is_dir():  # the notebook declares its profiles: a missing one is an error, not defaults
                raise ConfigError(f"profile file {path.relative_to(PARAMS_DIR.parent.parent)} is missing: restore it "
                                  f"(git checkout -- {path.relative_to(PARAMS_DIR.parent.parent)})")
            return {}
        values = _yaml(path.read_text(), f"profile file {path.name} of {cls.notebook}") or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a mapping of parameter names to values")
        return values

    @classmethod
    def load(cls, profile: str = "tiny", params: dict | None = None) -> "Config":
        """Defaults <- the profile's YAML <- `params`; validated. Raises ConfigError naming the bad parameter."""
        if not isinstance(profile, str):
            raise ConfigError(f"parameter 'profile' = {profile!r} has the wrong type: expected str")
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"parameter 'params' must be a mapping of parameter names to values, "
                              f"got {type(params).__name__}: {params!r}")
        params = dict(params or {})
        values = {**cls.profile_values(profile), **params, "profile": profile}
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"unknown parameter {unknown[0]!r} for {cls.notebook or cls.__name__}: "
                f"allowed {', '.join(n for n in cls.field_names() if n != 'profile')}")
        return cls(**values)

    @classmethod
    def from_namespace(cls, ns: dict) -> "Config":
        """The Config of a notebook from its parameters cell as papermill left it: `Config.from_namespace(globals())`.

        `profile`, then `params` (a mapping, e.g. from `-y`), then every parameter given on its own (`-p n_seeds 2`;
        None means "the profile's value"). Any other plain value in the namespace was injected under a name that is
        not a parameter (`-p profle smoke`): one ConfigError, before any work starts."""
        names = set(cls.field_names())
        unknown = sorted(k for k, v in ns.items() if not k.startswith("_") and k not in _KERNEL_NAMES
                         and k not in names and k != "params" and isinstance(v, _PLAIN))
        if unknown:
            raise ConfigError(f"unknown parameter {unknown[0]!r} for {cls.notebook or cls.__name__}: "
                              f"allowed {', '.join(n for n in cls.field_names())}")
        params = ns.get("params")
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"parameter 'params' must be a mapping of parameter names to values, "
                              f"got {type(params).__name__}: {params!r}")
        single = {k: ns[k] for k in names - {"profile"} if ns.get(k) is not None}
        return cls.load(ns.get("profile", "tiny"), {**(params or {}), **single})

    @classmethod
    def parameters_cell(cls) -> str:
        """The source of the notebook's `parameters` cell: every parameter as a line papermill can replace, with its
        type, allowed values and meaning as the comment (what `papermill --help-notebook` shows)."""
        path = f"notebooks/params/{cls.notebook}/<profile>.yaml"
        lines = [f'profile = "tiny"  # str, one of {" | ".join(PROFILES)}: the settings file {path}',
                 "params = {}  # dict: overrides as one mapping, e.g. {\"seed\": 1}; the single parameters below win",
                 "# None below means the profile's value"]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "profile":
                continue
            m = f.metadata
            each = "each " if typing.get_origin(hints[f.name]) is tuple else ""
            allowed = (f"{each}one of {', '.join(map(repr, m['choices']))}" if m.get("choices") else
                       f"in [{m.get('lo', '-inf')}, {m.get('hi', 'inf')}]".replace("None", "")
                       if m.get("lo") is not None or m.get("hi") is not None else "")
            kind = _type_name(hints[f.name]).replace("NoneType", "None").replace("tuple", "list")
            comment = ", ".join(x for x in (kind, allowed) if x) + (f": {m['doc']}" if m.get("doc") else "")
            comment = comment.replace(" = ", ": ").replace("=", ":")  # papermill skips a line with a second "="
            lines.append(f"{f.name} = None  # {comment}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def use_bf16(self) -> bool:
        """The effective choice of this config's `bf16` setting on its `device` (lib.precision); False without one."""
        if not hasattr(self, "bf16"):
            return False
        from lib import precision
        from lib.models import resolve_device

        return precision.use_bf16(self.bf16, resolve_device(getattr(self, "device", "cpu")))

    @property
    def precision(self) -> str:
        """'bf16' or 'fp32': the effective training precision, as pages and results records state it."""
        from lib.precision import label

        return label(self.use_bf16())

    def key_dict(self) -> dict:
        """The fields that change results (everything but `recompute`; `bf16` as its effective value): cache keys."""
        d = self.to_dict()
        d.pop("recompute", None)
        if "bf16" in d:
            d["bf16"] = self.use_bf16()
        return d

    def table(self):
        """The resolved parameters as a DataFrame (name, value, allowed, meaning), for the notebook page."""
        import pandas as pd

        rows = []
        for f in dataclasses.fields(self):
            m = f.metadata
            allowed = (", ".join(map(str, m["choices"])) if m.get("choices")
                       else f"[{m.get('lo', '')}, {m.get('hi', '')}]" if m.get("lo") is not None or m.get("hi") is not None
                       else "")
            value = getattr(self, f.name)
            if f.name == "bf16":
                value = f"{value!r} → {self.precision}"  # the setting and what it resolved to on this machine
            rows.append({"parameter": f.name, "value": value, "allowed": allowed, "meaning": m.get("doc", "")})
        return pd.DataFrame(rows).set_index("parameter")


def parse_set(items: list[str]) -> dict:
    """Parse `key=value` strings (values as YAML: `n=3`, `lr=1e-3`, `tasks=[a, b]`) into a dict."""
    out = {}
    items = [part for item in items for part in _ASSIGNMENT.split(item.strip()) if part]
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = _yaml(raw, f"the value of {key.strip()!r} in --set/SET") if raw.strip() else ""
        if isinstance(value, str) and _YAML_FLOAT.match(value):
            value = float(value)
        out[key.strip()] = value
    return out


def read_params_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"parameter file {path} does not exist")
    values = _yaml(path.read_text(), f"parameter file {path}") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"parameter file {path} must hold a mapping of parameter names to values")
    return values


# --------------------------------------------------------------------------- the notebooks' parameters cells
_CELL = re.compile(r'(# %% tags=\["parameters"\]\n)(.*?)(\n(?=# %%))', re.S)


def sync_parameters_cells(write: bool = True) -> list[str]:
    """Make every notebook's `parameters` cell the one its Config generates; returns the notebooks that differed
    (`write=False`: only report them). `python -m lib.config sync` runs it; a test checks that none differ."""
    from lib.paths import NOTEBOOKS_DIR
    from lib.chapters import NOTEBOOKS, config_class

    stale = []
    for nb in NOTEBOOKS:
        path = NOTEBOOKS_DIR / f"{nb}.py"
        text = path.read_text()
        cell = config_class(nb).parameters_cell()
        new, n = _CELL.subn(lambda m: m.group(1) + cell + "\n" + m.group(3), text, count=1)
        if n != 1:
            raise ConfigError(f"{path.name} has no '# %% tags=[\"parameters\"]' cell")
        if new != text:
            stale.append(nb)
            if write:
                path.write_text(new)
    return stale


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["sync"]:
        sys.exit("usage: python -m lib.config sync [--check]")
    changed = sync_parameters_cells(write="--check" not in sys.argv)
    print(("stale: " if "--check" in sys.argv else "rewrote: ") + (", ".join(changed) or "none"))
    sys.exit(1 if changed and "--check" in sys.argv else 0)

