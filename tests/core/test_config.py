from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from cxraug.core.config import Params, load_params, parse_params
from cxraug.core.errors import CxraugError

REPO = Path(__file__).resolve().parents[2]


def test_repository_params_validate_and_match_documented_defaults():
    params = load_params(REPO / "params.yaml")
    assert params.prepare.classes == ["No Finding", "Infiltration", "Atelectasis", "Effusion", "Nodule"]
    assert params.prepare.image_size == 64


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"prepare": {"val_fractoin": 0.1}}, "prepare.val_fractoin", "unknown key"),
        ({"prepar": {}}, "prepar", "unknown key"),
        ({"prepare": {"image_size": "big"}}, "prepare.image_size", "integer"),
        ({"prepare": {"image_size": 48}}, "prepare.image_size", "power of two"),
        ({"prepare": {"image_size": 16}}, "prepare.image_size", "power of two"),
        (
            {"prepare": {"val_fraction": -0.1, "train_fraction": 0.95}},
            "prepare.val_fraction",
            "greater than 0",
        ),
        ({"prepare": {"train_fraction": 0.8}}, "prepare", "sum to 1"),
        ({"prepare": {"on_bad_image": "ignore"}}, "prepare.on_bad_image", "'skip' or 'fail'"),
        ({"prepare": {"classes": ["No Finding", "No Finding"]}}, "prepare.classes", "distinct"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(raw, key, hint):
    with pytest.raises(CxraugError) as err:
        parse_params(raw)
    message = str(err.value)
    assert "\n" not in message
    assert f"{key}:" in message
    assert hint in message


def test_missing_sections_take_defaults_and_values_are_frozen():
    params = parse_params({})
    assert params == Params()
    with pytest.raises(ValidationError):
        params.prepare.image_size = 128  # type: ignore[misc]


def test_unreadable_files_say_what_is_wrong(tmp_path):
    with pytest.raises(CxraugError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("prepare:\n  image_size: [64\n")
    with pytest.raises(CxraugError, match="not valid YAML at line"):
        load_params(bad)
    bad.write_text(yaml.safe_dump(["a", "list"]))
    with pytest.raises(CxraugError, match="mapping of sections"):
        load_params(bad)


def _differences(defaults: dict, written: dict, path: str = "") -> list[str]:
    found = []
    for key in sorted(set(defaults) | set(written)):
        where = f"{path}{key}"
        if key not in written:
            found.append(f"{where}: absent from params.yaml")
        elif key not in defaults:
            found.append(f"{where}: unknown to config")
        elif isinstance(defaults[key], dict) and isinstance(written[key], dict) and where != "tune.overrides":
            found += _differences(defaults[key], written[key], where + ".")
        elif defaults[key] != written[key]:
            found.append(f"{where}: config default {defaults[key]!r}, params.yaml {written[key]!r}")
    return found


def test_config_defaults_are_exactly_params_yaml():
    """params.yaml spells out every setting, and says what the code would do without it."""
    written = yaml.safe_load((REPO / "params.yaml").read_text())
    assert _differences(Params().model_dump(mode="json"), written) == []


def test_a_filter_mode_that_repeats_the_studys_own_column_is_refused_in_one_line():
    """BAGAN's own rule is argmax: as a filter-sensitivity mode at an n the study draws it would be
    bagan_<n> again (the same first n images, the same classifiers), so it is refused; at another n, or a
    threshold rule at another cut-off, it is a draw of its own and allowed."""
    from cxraug.core.config import own_filter_mode

    def raw(modes, n=1000, bagan=None):
        per_gan = {"bagan": bagan or {"mode": "argmax"}}
        return {
            "synthesize": {"n_per_class": [1000, 3000], "filter": {"threshold": 0.5, "per_gan": per_gan}},
            "filter_sensitivity": {"gan": "bagan", "n_per_class": n, "modes": modes, "threshold": 0.5},
        }

    with pytest.raises(
        CxraugError,
        match=r"^params.yaml: filter_sensitivity.modes: argmax is bagan.s own filter .* from bagan_1000$",
    ):
        parse_params(raw(["none", "argmax"]))
    assert own_filter_mode(parse_params(raw(["none", "threshold"]))) == "argmax"
    assert own_filter_mode(parse_params(raw(["none", "argmax"], n=500))) is None  # bagan_500 is no column
    threshold = {"mode": "threshold", "threshold": 0.8}
    assert (
        own_filter_mode(parse_params(raw(["none", "threshold"], bagan=threshold))) is None
    )  # another cut-off
    at_half = {"mode": "threshold", "threshold": None}  # null: synthesize.filter.threshold, 0.5
    with pytest.raises(CxraugError, match="threshold is bagan's own filter"):
        parse_params(raw(["none", "threshold"], bagan=at_half))
    assert own_filter_mode(parse_params(raw(["none"]) | {"generators": ["opengan"]})) is None
