"""Parameter validation: every kind of bad value is one ConfigError naming the parameter and what is allowed."""
from dataclasses import FrozenInstanceError, dataclass

import pytest

from lib.config import Config, ConfigError, param, parse_set
from lib.chapters import NOTEBOOKS, config_class


@dataclass(frozen=True)
class Toy(Config):
    notebook = "no-such-notebook"  # no YAML files: defaults only
    n_steps: int = param(10, lo=1, hi=1000, doc="training steps")
    lr: float = param(1e-3, lo=0.0, hi=1.0)
    family: str = param("gpt2", choices=("gpt2", "bert"))
    sizes: tuple[int, ...] = param((1, 2), lo=1)
    note: str | None = param(None)


def test_defaults_and_overrides():
    cfg = Toy.load("smoke", {"n_steps": 5, "lr": 1, "sizes": [3, 4]})
    assert (cfg.n_steps, cfg.lr, cfg.sizes, cfg.profile) == (5, 1.0, (3, 4), "smoke")
    assert isinstance(cfg.lr, float)
    with pytest.raises(FrozenInstanceError):
        cfg.n_steps = 3


@pytest.mark.parametrize("profile, params, words", [
    ("huge", {}, ["unknown profile 'huge'", "smoke, tiny, local, paper"]),
    ("tiny", {"n_stpes": 3}, ["unknown parameter 'n_stpes'", "n_steps"]),
    ("tiny", {"n_steps": "ten"}, ["'n_steps'", "wrong type", "int"]),
    ("tiny", {"n_steps": True}, ["'n_steps'", "wrong type"]),
    ("tiny", {"n_steps": 2.5}, ["'n_steps'", "wrong type"]),
    ("tiny", {"n_steps": 0}, ["'n_steps'", "out of range", "1 <= n_steps <= 1000"]),
    ("tiny", {"lr": 2.0}, ["'lr'", "out of range"]),
    ("tiny", {"family": "t5"}, ["'family'", "'gpt2', 'bert'"]),
    ("tiny", {"sizes": [1, 0]}, ["'sizes'", "out of range"]),
    ("tiny", {"sizes": 3}, ["'sizes'", "expected a list"]),
    ("tiny", {"seed": -1}, ["'seed'", "out of range"]),
    ("tiny", {"recompute": "yes"}, ["'recompute'", "wrong type", "bool"]),
])
def test_bad_values_raise_one_clear_error(profile, params, words):
    with pytest.raises(ConfigError) as e:
        Toy.load(profile, params)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_optional_field_accepts_none_and_value():
    assert Toy.load("tiny", {"note": None}).note is None
    assert Toy.load("tiny", {"note": "x"}).note == "x"
    with pytest.raises(ConfigError):
        Toy.load("tiny", {"note": 3})


def test_parse_set_reads_yaml_values():
    assert parse_set(["n=3", "lr=1e-3", "xs=[a, b]", "flag=true"]) == {"n": 3, "lr": 1e-3, "xs": ["a", "b"], "flag": True}
    with pytest.raises(ConfigError):
        parse_set(["novalue"])


@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
@pytest.mark.parametrize("profile", ["smoke", "tiny", "local", "paper"])
def test_every_profile_file_is_valid(notebook, profile):
    cfg = config_class(notebook).load(profile)
    assert cfg.profile == profile


def test_unknown_notebook():
    with pytest.raises(ConfigError, match="unknown notebook"):
        config_class("99_nothing")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), ".nan", ".inf"])
def test_nan_and_infinity_are_rejected_for_every_float(value):
    params = {"lr": parse_set([f"lr={value}"])["lr"] if isinstance(value, str) else value}
    with pytest.raises(ConfigError, match="'lr'.*finite"):
        Toy.load("tiny", params)


@pytest.mark.parametrize("items, words", [
    (["xs=[a, b"], ["'xs'", "not valid YAML", "line 1, column"]),
    (["xs={a: 1"], ["'xs'", "not valid YAML"]),
])
def test_malformed_yaml_in_set_is_one_line(items, words):
    with pytest.raises(ConfigError) as e:
        parse_set(items)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words)


def test_one_set_string_with_lists_survives_make():
    """make passes SET as one argument: its assignments split at the next `key=`, never inside a list."""
    assert parse_set(["corpora=[english, python] max_chars=300000"]) == {"corpora": ["english", "python"],
                                                                         "max_chars": 300000}


def test_malformed_params_file_is_one_line(tmp_path):
    from lib.config import read_params_file

    bad = tmp_path / "p.yaml"
    bad.write_text("n_steps: [1, 2\nlr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        read_params_file(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value) and "line" in str(e.value)


def test_params_that_are_not_a_mapping_fail_first():
    with pytest.raises(ConfigError, match="must be a mapping"):
        Toy.load("tiny", [1, 2])


def test_missing_or_malformed_profile_file_is_an_error(tmp_path, monkeypatch):
    from lib import config

    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "tiny.yaml").write_text("n_steps: 3\n")
    (tmp_path / "toy" / "local.yaml").write_text("n_steps: [3\n")
    monkeypatch.setattr(config, "PARAMS_DIR", tmp_path)

    @dataclass(frozen=True)
    class WithProfiles(Toy):
        notebook = "toy"

    assert WithProfiles.load("tiny").n_steps == 3
    with pytest.raises(ConfigError, match="profile file .*smoke.yaml is missing"):
        WithProfiles.load("smoke")
    with pytest.raises(ConfigError, match="local.yaml of toy is not valid YAML at line"):
        WithProfiles.load("local")
