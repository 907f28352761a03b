"""lib.bases: one loader and one key for every starting model; lib.artifacts: keys cover the building code."""
import subprocess
import sys

import pytest

from lib import artifacts, bases
from lib.chapters import NOTEBOOKS, config_class
from lib.paths import NOTEBOOKS_DIR, ROOT
from tests._tiny import tiny_model


def test_a_folder_is_keyed_by_its_content(tmp_path):
    model = tiny_model("gpt2")
    model.save_pretrained(tmp_path / "m")
    first = bases.source_key(str(tmp_path / "m"))
    assert first.startswith("dir:") and bases.source_key(str(tmp_path / "m")) == first
    cfg = tmp_path / "m" / "config.json"
    cfg.write_text(cfg.read_text().replace('"n_layer": 2', '"n_layer": 2 '))
    assert bases.source_key(str(tmp_path / "m")) != first  # a changed folder is a new key in every chapter
    assert bases.source_key("gpt2").startswith("hub:gpt2@")


def test_load_folder_returns_an_eval_model_with_its_key(tmp_path):
    from transformers import GPT2TokenizerFast  # noqa: F401  (a tokenizer is needed beside the weights)
    from lib import tokenizers

    tok = tokenizers.train_bpe(["a b c d e f g h " * 50], 300)
    model = tiny_model("gpt2", vocab_size=len(tok))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    base = bases.load(str(tmp_path / "m"))
    assert not base.model.training and base.key == bases.source_key(str(tmp_path / "m"))
    assert base.source == str(tmp_path / "m") and base.metrics == {}


def test_code_is_part_of_the_key(tmp_path, monkeypatch):
    mod = tmp_path / "builder_mod.py"
    mod.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(artifacts, "ROOT", tmp_path)
    import importlib

    import builder_mod
    k1 = artifacts.artifact_key("k", {"a": 1}, code=(builder_mod,))
    assert k1 != artifacts.artifact_key("k", {"a": 1})
    mod.write_text("X = 2\n")
    importlib.reload(builder_mod)
    assert artifacts.artifact_key("k", {"a": 1}, code=(builder_mod,)) != k1


def test_the_bases_key_names_the_code_that_trains_them():
    assert {"lib.bases", "lib.train", "lib.models"} <= set(bases.CODE)


def test_every_notebook_is_listed_once():
    assert sorted(NOTEBOOKS) == sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_parameter_check_imports_no_heavy_package(notebook):
    """`make check` imports only the chapter's config: no torch, matplotlib or transformers (and for a chapter
    package, whose config.py holds nothing else, no pandas either)."""
    module = config_class(notebook).__module__
    heavy = ("torch", "matplotlib", "transformers") + (("pandas",) if module.endswith(".config") else ())
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            f"heavy = [m for m in {heavy!r} if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"{module} imports {out.stdout.strip()} {out.stderr[-500:]}"


def test_the_masked_lm_families_agree_with_lib_models():
    from lib import models

    assert set(bases.BERT_FAMILIES) == set(models.MASKED_FAMILIES)


def test_the_masked_lm_recipe_is_one_cycle_at_its_own_mask_rate_and_batch():
    spec = bases.Spec.load("tiny")
    t = bases.train_config(spec, "bert")
    assert (t.schedule, t.mlm_probability, t.batch_size) == ("linear", spec.bert_mask_rate, spec.bert_batch_size)
    from lib.train import lr_at

    assert lr_at(spec.bert_steps - 1, t) < 0.01 * t.lr  # decayed to (nearly) 0 at the last step
    assert spec.arch("bert").family == spec.bert_family == "roberta-prelayernorm"
    g = bases.train_config(spec, "gpt")
    assert (g.schedule, g.batch_size) == ("cosine", spec.batch_size)


def test_bert_replicas_are_independent_models_over_one_tokenizer():
    """Copy 1 differs from copy 0 in its weights and key and shares its tokenizer; a copy past bert_seeds is
    refused."""
    import torch

    spec = bases.Spec.load("smoke")
    a, b = bases.load("study:bert", "smoke"), bases.load("study:bert", "smoke", replica=1)
    assert a.key != b.key and a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    assert bases.train_config(spec, "bert", 1).seed == bases.train_config(spec, "bert").seed + 1
    pa, pb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    assert pa.keys() == pb.keys() and not all(torch.equal(pa[k], pb[k]) for k in pa if pa[k].dim() == 2)
    with pytest.raises(bases.ConfigError, match="bert_seeds"):
        bases.get("bert", spec, replica=spec.bert_seeds)


def test_get_all_trains_each_copy_once_with_or_without_recompute(tmp_path, monkeypatch):
    import dataclasses

    from lib.bases import core

    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STUDY_WORKERS", raising=False)  # one worker: every training runs in this process
    trained, real = [], core._compute_base
    def counted(cfg, name, *args, **kwargs):
        trained.append(name)
        return real(cfg, name, *args, **kwargs)

    monkeypatch.setattr(core, "_compute_base", counted)
    spec = bases.Spec.load("smoke", {"models": ["bert"]})
    core.get_all(spec)
    assert trained == ["bert"] * spec.bert_seeds
    core.get_all(spec)  # all cached now
    assert len(trained) == spec.bert_seeds
    core.get_all(dataclasses.replace(spec, recompute=True))
    assert len(trained) == 2 * spec.bert_seeds  # each copy once more, none twice
