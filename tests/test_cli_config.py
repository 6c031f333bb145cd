import subprocess
import sys

import pytest

from medfuse.config import ConfigError, config_hash, load_config


def test_importing_the_cli_loads_no_heavy_library():
    code = "import sys, medfuse.cli; print(sorted(m for m in ('torch', 'transformers', 'duckdb', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "medfuse.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("synth", "prepare"):
        assert command in out.stdout


def test_user_config_overrides_default_and_cli_overrides_file(tmp_path):
    f = tmp_path / "my.toml"
    f.write_text("[prepare]\nseed = 7\nlab_max_tests = 20\n")
    cfg = load_config(f, {"prepare": {"seed": 9, "source": None}})
    assert cfg.prepare.seed == 9 and cfg.prepare.lab_max_tests == 20 and cfg.prepare.source == "mimic3"
    assert config_hash(cfg.prepare) != config_hash(load_config().prepare)


@pytest.mark.parametrize(
    "text, message",
    [("[prepare]\nsplit_fractions = [0.5, 0.5, 0.5]\n", "split_fractions"),
     ("[prepare]\nunknown_key = 1\n", "unknown_key"),
     ("[prepare\n", "invalid TOML")],
)
def test_bad_config_is_reported_with_file_and_key(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(f)
    assert str(f) in str(e.value)
