import pytest

from gmsa import ConfigError, GenerationSettings, GMSAConfig


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rates": (0,)}, "rates"),
        ({"rates": ()}, "rates"),
        ({"rates": (4, 4)}, "rates"),
        ({"encoder_layers": 0}, "encoder_layers"),
        ({"lsa_layers": -1}, "lsa_layers"),
        ({"segment_tokens": 30, "rates": (4,)}, "segment_tokens"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"keft_mode": "everything"}, "keft_mode"),
        ({"generation": {"max_new_tokens": 0}}, "generation.max_new_tokens"),
        ({"prompt": {"question_template": "no placeholder"}}, "prompt.question_template"),
    ],
)
def test_invalid_values_name_field_and_value(overrides, field):
    with pytest.raises(ConfigError, match=field):
        GMSAConfig(**overrides)


def test_error_shows_offending_value():
    with pytest.raises(ConfigError, match="0"):
        GMSAConfig(rates=(4, 0))


def test_round_trip_through_json(tmp_path):
    config = GMSAConfig(encoder_layers=2, rates=(2, 4), generation=GenerationSettings(stop=("\n",)))
    config.to_json(tmp_path / "c.json")
    assert GMSAConfig.from_json(tmp_path / "c.json") == config


def test_unknown_keys_are_rejected_by_name():
    with pytest.raises(ConfigError, match="encoder_layer"):
        GMSAConfig.from_dict({"encoder_layer": 3})
    with pytest.raises(ConfigError, match="max_tokens"):
        GMSAConfig.from_dict({"generation": {"max_tokens": 3}})


def test_depth_checked_against_base():
    with pytest.raises(ConfigError, match="encoder_layers=9"):
        GMSAConfig(encoder_layers=9).check_against_base(num_layers=4)


def test_unsupported_rate_at_call_time():
    with pytest.raises(ConfigError, match="rate=3"):
        GMSAConfig(rates=(4, 8)).check_rate(3)
