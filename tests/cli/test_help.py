"""Every verb's --help as a user reads it: placeholders survive rendering, flags carry no bogus type,
defaults are whole paths."""

import re

import pytest
import typer.main

from cxraug.cli.app import app

# What a markup renderer leaves when it swallows <placeholder> or *emphasis*: an empty path segment,
# a bare extension, an underscore before a separator, a directory default that lost its last part.
SWALLOWED = [
    (re.compile(r"(?<![:/])//"), "empty path segment '//'"),
    (re.compile(r"/\.(?:json|png|csv|yaml|npz|pt)\b"), "file name lost before its extension ('/.json')"),
    (re.compile(r"\w_(?=\s*[|,)\]]|\s*$)", re.M), "name lost after '_' ('standard_aug_ |')"),
    (re.compile(r"\[default: [^\]]*/\]"), "directory default that lost its last part"),
    (re.compile(r"_\.\w+\b"), "name lost before an extension ('best_.yaml')"),
]


def _commands(group, prefix: tuple[str, ...] = ()):  # typer vendors click: groups are duck-typed
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path, command
        if hasattr(command, "commands"):
            yield from _commands(command, path)


ROOT = typer.main.get_command(app)
VERBS = [("",)] + [path for path, _ in _commands(ROOT)]


def _help(path: tuple[str, ...]) -> str:
    ctx = ROOT.make_context("cxraug", [], resilient_parsing=True)
    command = ROOT
    for name in (p for p in path if p):
        command = command.commands[name]
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
    return command.get_help(ctx)


def test_every_verb_is_walked():
    names = {" ".join(p) for p in VERBS}
    assert {"synthesize", "classify", "gan-metrics", "report", "tune", "inspect", "download nih"} <= names
    assert len(VERBS) >= 18


@pytest.mark.parametrize("path", VERBS, ids=lambda p: " ".join(p) or "cxraug")
def test_help_keeps_its_placeholders(path):
    text = _help(path)
    assert "Usage:" in text
    found = [
        f"{why}: {m.group(0)!r} in ...{text[max(0, m.start() - 40) : m.end() + 20]!r}..."
        for pattern, why in SWALLOWED
        for m in pattern.finditer(text)
    ]
    assert not found, "\n".join(found)
    assert "<bool>" not in text, "a flag takes no value: it must not show a type"


def test_the_detector_catches_what_markdown_rendering_did():
    """The strings issue 17 saw in markdown mode are each caught (so a clean pass means something)."""
    seen = [
        "Writes //<00000>.png and /index.csv",
        "[default: models/]",
        "[default: metrics/synthesize/.json]",
        "standard_aug_ | bagan_ | opengan_",
        "Writes /.json.",
        "tuning/best_.yaml",
    ]
    for line in seen:
        assert any(p.search(line) for p, _ in SWALLOWED), line
    clean = "Writes OUT/CLASS/00000.png and OUT/index.csv [default: models/GAN] https://x.org/a.json"
    assert not any(p.search(clean) for p, _ in SWALLOWED)


def test_a_flag_shows_no_type_and_a_value_option_shows_one():
    text = _help(("demo-data",))
    flag = next(line for line in text.splitlines() if "--force" in line)
    assert "<" not in flag.split("--force")[1].split("replace")[0]
    assert re.search(r"--n-images <int", text)
