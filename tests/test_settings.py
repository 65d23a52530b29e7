from types import SimpleNamespace

import pytest

from ccdseg.errors import ConfigError
from ccdseg.settings import (
    POSITIVE,
    check_rules,
    coerce,
    interval,
    one_of,
    parse_override,
    parse_overrides,
    value_range,
)


def test_overrides_read_values_as_toml_and_bare_words_as_strings():
    assert parse_override("detector.read_noise_e = 0.2") == ("detector.read_noise_e", 0.2)
    assert parse_override("glow.shapes=['edge']") == ("glow.shapes", ["edge"])
    assert parse_override("optimizer=adamw") == ("optimizer", "adamw")
    assert parse_overrides(["a=1", "b=true"]) == [("a", 1), ("b", True)]
    assert parse_overrides({"a": 1}) == [("a", 1)] and parse_overrides(None) == []
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_override("epochs")


@pytest.mark.parametrize("kind, value, expected", [
    (int, 3.0, 3), (float, 2, 2.0), (bool, True, True), (str, "cpu", "cpu"), (float | None, "none", None),
    (float | None, 5, 5.0), (int | None, None, None), (dict, {"a": 1}, {"a": 1}), (dict[str, float], {}, {}),
    (object, [1, 2], [1, 2]),
])
def test_coerce_converts_to_the_field_type(kind, value, expected):
    result = coerce("x", kind, value)
    assert result == expected and type(result) is type(expected)


def test_coerce_ranges_and_lists():
    assert coerce("glow.band_columns", tuple, [3.0, 5], like=(8, 40)) == (3, 5)
    assert coerce("glow.length_px", tuple[float, float], (4, 60), like=(1.0, 2.0)) == (4.0, 60.0)
    assert coerce("glow.shapes", tuple, ["band"], like=("corner", "edge"), any_length=True) == ("band",)
    with pytest.raises(ConfigError, match=r"glow.band_columns must be a list like \[8, 40\], got \[1, 2, 3\]"):
        coerce("glow.band_columns", tuple, [1, 2, 3], like=(8, 40))


@pytest.mark.parametrize("kind, value, message", [
    (int, 2.5, "n must be an integer, got 2.5"), (int, True, "n must be an integer, got True"),
    (float, True, "n must be a number, got True"), (float, None, "n must be a number, got None"),
    (bool, 1, "n must be true or false, got 1"), (str, 3, "n must be a string, got 3"),
])
def test_coerce_refuses_naming_the_parameter(kind, value, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        coerce("n", kind, value)
    with pytest.raises(ConfigError, match=f"^n must be of type {kind.__name__}"):
        coerce("n", kind, value, words={kind: f"of type {kind.__name__}"})


def test_rules_report_the_first_bad_value():
    config = SimpleNamespace(a=SimpleNamespace(low=0.5, pair=(2.0, 1.0)), mode="fast")
    rules = (("a.low", interval("(0, 1]")), ("mode", one_of(("fast", "slow"))), ("a.pair", value_range()))
    with pytest.raises(ConfigError, match=r"^a.pair = \(2.0, 1.0\): must be a range \[low, high\] with 0.0 <= low"):
        check_rules(config, rules)
    config.a.pair = (1.0, 2.0)
    assert check_rules(config, rules) is config
    for value, allowed in ((0.0, False), (1e-9, True), (1.0, True), (1.5, False)):
        assert interval("(0, 1]")[0](value) is allowed
    assert interval("[0, 1)")[0](0.0) and not interval("[0, 1)")[0](1.0)
    with pytest.raises(ConfigError, match="^a.low = 0.0: must be > 0$"):
        check_rules(SimpleNamespace(a=SimpleNamespace(low=0.0)), (("a.low", POSITIVE),))
