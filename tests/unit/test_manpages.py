"""The manual pages and docs/config.md's key reference are what their one source generates, and they render."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from ipvsd import manpages
from ipvsd.cli import COMMANDS, build_parser, main
from ipvsd.config import schema

ROOT = Path(__file__).resolve().parents[2]
CONFIG_MD = ROOT / "docs" / "config.md"
STALE = "out of date: run scripts/manpages and commit the result"


def test_committed_pages_are_what_the_generator_builds() -> None:
    for name, text in manpages.pages(CONFIG_MD.read_text(encoding="utf-8")).items():
        assert (ROOT / "ipvsd" / "man" / name).read_text(encoding="utf-8") == text, f"ipvsd/man/{name} {STALE}"


def test_config_md_reference_is_what_the_schema_says() -> None:
    text = CONFIG_MD.read_text(encoding="utf-8")
    assert manpages.with_reference(text) == text, f"docs/config.md {STALE}"


def test_every_option_of_every_command_is_in_ipvsd_8() -> None:
    page = (ROOT / "ipvsd" / "man" / "ipvsd.8").read_text(encoding="utf-8")
    parser, _ = build_parser(COMMANDS)
    for name, child in parser.children.items():
        assert f".SS {name}\n" in page
        for action in child._actions:
            for option in action.option_strings:
                if not option.startswith("--no-"):  # BooleanOptionalAction: shown as --[no-]name
                    assert manpages.esc(option.removeprefix("--")) in page, f"{name} {option}"


def test_every_key_of_the_schema_is_in_ipvsd_toml_5() -> None:
    page = (ROOT / "ipvsd" / "man" / "ipvsd.toml.5").read_text(encoding="utf-8")
    for model in (schema.Settings, schema.Limits, schema.CheckTiming, schema.VirtualService, schema.RealServer,
                  schema.HttpCheck, schema.ExternalCheck, schema.FallbackServer, schema.Persistence):
        for key in model.model_fields:
            if key != "type" or model is schema.Tunnel:
                assert f"\\fB{manpages.esc(key)}\\fR (default: " in page, f"{model.__name__}.{key}"


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
@pytest.mark.parametrize("name", list(manpages.PAGES))
def test_pages_render_without_warnings(name: str) -> None:
    env = {**os.environ, "MANWIDTH": "100"}
    done = subprocess.run(["man", "--warnings", "-l", str(ROOT / "ipvsd" / "man" / name)], capture_output=True,
                          text=True, env=env, check=True)
    assert done.stderr == ""
    text = re.sub(".\b", "", done.stdout)  # grotty's overstrikes (bold, underline) to plain text
    assert "NAME" in text and "SEE ALSO" in text


def test_pages_ship_with_the_package_and_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ipvsd"]
    assert "man/*" in data
    assert main(["manpage"]) == 0
    assert capsys.readouterr().out == (ROOT / "ipvsd" / "man" / "ipvsd.8").read_text(encoding="utf-8")
    assert main(["manpage", "ipvsd.toml.5"]) == 0
    assert capsys.readouterr().out.startswith(".TH IPVSD.TOML 5 ")
    assert main(["manpage", "--install", str(tmp_path)]) == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.[58]")) == ["man5/ipvsd.toml.5",
                                                                                   "man8/ipvsd.8"]
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("## Installing on a director"):]
    assert "ipvsd manpage --install /usr/local/share/man" in install.split("\n## ")[0]


def test_the_unit_points_at_the_pages() -> None:
    unit = (ROOT / "etc" / "ipvsd.service").read_text().splitlines()
    (docs,) = [line for line in unit if line.startswith("Documentation=")]
    assert docs.split("=", 1)[1].split() == ["man:ipvsd(8)", "man:ipvsd.toml(5)", "man:ipvsadm(8)"]


def test_operations_md_documents_plan_and_the_run_options() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for needle in ("`ipvsd plan", "`--force`", "`--debug`", "`--resync SECONDS`", "`--log-format text|json`"):
        assert needle in doc
