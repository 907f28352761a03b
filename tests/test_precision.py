"""Precision by capability: 'auto' is fp32 where bf16 would be emulated, bf16 where it is native; the effective
choice, not the setting, keys the cache."""
import warnings

import pytest
import torch

from lib import precision
from lib.artifacts import artifact_key
from lib.config import ConfigError
from lib import bases as base_models
from lib.chapters.zhao import config as zhao


@pytest.fixture
def cpu_has(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16."""
    def set_native(native: bool):
        precision.native_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        monkeypatch.setattr(precision, "_warned", set())
    yield set_native
    precision.native_bf16.cache_clear()


def test_auto_is_fp32_without_native_bf16(cpu_has):
    cpu_has(False)
    assert precision.use_bf16("auto", "cpu") is False
    assert base_models.Spec.load("smoke").use_bf16() is False
    assert base_models.Spec.load("smoke").precision == "fp32"


def test_auto_is_bf16_with_native_bf16(cpu_has):
    cpu_has(True)
    assert precision.use_bf16("auto", torch.device("cpu")) is True
    assert base_models.Spec.load("smoke").precision == "bf16"


def test_amx_alone_counts_as_native(cpu_has, monkeypatch):
    cpu_has(False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.native_bf16("cpu")


def test_explicit_bf16_on_emulating_cpu_runs_with_one_warning(cpu_has):
    cpu_has(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precision.use_bf16(True, "cpu") is True
        assert precision.use_bf16(True, "cpu") is True
    assert len(caught) == 1 and "emulated" in str(caught[0].message)


def test_explicit_false_is_fp32_everywhere(cpu_has):
    cpu_has(True)
    assert precision.use_bf16(False, "cpu") is False


def test_cache_key_holds_the_effective_precision(cpu_has):
    """Two machines that resolve 'auto' differently never share an artifact; 'auto' and its resolution do."""
    cfg = zhao.Config.load("smoke")
    cpu_has(False)
    fp32_key = artifact_key("m", cfg)
    assert fp32_key == artifact_key("m", zhao.Config.load("smoke", {"bf16": False}))
    cpu_has(True)
    bf16_key = artifact_key("m", cfg)
    assert bf16_key == artifact_key("m", zhao.Config.load("smoke", {"bf16": True}))
    assert fp32_key != bf16_key


@pytest.mark.parametrize("bad", ["fast", 1, 0.5])
def test_bad_setting_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match="bf16"):
        base_models.Spec.load("smoke", {"bf16": bad})


def test_page_table_states_setting_and_resolution(cpu_has):
    cpu_has(False)
    row = base_models.Spec.load("smoke").table().loc["bf16", "value"]
    assert row == "'auto' → fp32"
