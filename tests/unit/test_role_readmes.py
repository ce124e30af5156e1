"""Each role's README lists every variable of its argument spec with the default from defaults/main.yml."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent for p in (REPO / "roles").glob("*/meta/argument_specs.yml"))


def _generator():
    spec = importlib.util.spec_from_file_location("role_readme", REPO / "scripts" / "role_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readmes_are_up_to_date():
    assert _generator().main(["--check"]) == 0, "run .venv/bin/python scripts/role_readme.py"


@pytest.mark.parametrize("role_dir", ROLES, ids=lambda p: p.name)
def test_every_default_is_in_the_argument_spec(role_dir):
    """A variable with a default is documented (and so gets its README row), with the same default."""
    options = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((role_dir / "defaults" / "main.yml").read_text()) or {}
    assert sorted(set(defaults) - set(options)) == []
    differ = {k: (options[k]["default"], v) for k, v in defaults.items() if "default" in options[k] and options[k]["default"] != v}
    assert differ == {}


@pytest.mark.parametrize("role_dir", ROLES, ids=lambda p: p.name)
def test_readme_rows(role_dir):
    options = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    readme = (role_dir / "README.md").read_text()
    assert [k for k in options if "| `%s` |" % k not in readme] == []
