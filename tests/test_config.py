"""The config accepts every documented default and names the key of every rejected value."""

from __future__ import annotations

import json

import pytest

from model_core.config import ConfigError, TSSynthConfig, parse_config


def test_defaults_round_trip_through_config_json(tmp_path):
    config = TSSynthConfig()
    config.save(tmp_path / "config.json")
    assert TSSynthConfig.load(tmp_path / "config.json") == config


def test_unknown_key_is_rejected_with_its_path():
    with pytest.raises(ConfigError, match=r"diffusion\.backbone: unknown key"):
        parse_config({"diffusion": {"backbone": "gru"}})


def test_invalid_value_names_the_key():
    with pytest.raises(ConfigError, match=r"diffusion\.backbone_type"):
        parse_config({"diffusion": {"backbone_type": "lstm"}})
    with pytest.raises(ConfigError, match=r"window\.seq_len"):
        parse_config({"window": {"seq_len": 1}})


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="num_heads"):
        parse_config({"diffusion": {"backbone_type": "transformer", "hidden_size": 30, "num_heads": 4}})
    parse_config({"diffusion": {"hidden_size": 30, "num_heads": 4}})  # heads only constrain the transformer
    with pytest.raises(ConfigError, match="sampling.steps"):
        parse_config({"diffusion": {"timesteps": 10}, "sampling": {"steps": 20}})
    with pytest.raises(ConfigError, match="both discrete and continuous"):
        parse_config({"data": {"discrete_columns": ["a"], "continuous_columns": ["a"]}})


def test_overrides_merge_nested_sections_and_keep_the_rest():
    config = TSSynthConfig().with_overrides({"training": {"max_steps": 7}})
    assert config.training.max_steps == 7
    assert config.training.batch_size == TSSynthConfig().training.batch_size
    with pytest.raises(ConfigError, match=r"training\.max_step"):
        TSSynthConfig().with_overrides({"training": {"max_step": 7}})


def test_load_rejects_malformed_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TSSynthConfig.load(path)
    path.write_text(json.dumps({"sampling": {"sampler": "euler"}}))
    with pytest.raises(ConfigError, match=r"sampling\.sampler"):
        TSSynthConfig.load(path)
