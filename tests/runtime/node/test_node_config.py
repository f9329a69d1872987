"""NodeConfig: options and a JSON file with the same keys, every mistake a clear ConfigError."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spinefx.cli import main
from spinefx.runtime.errors import ConfigError
from spinefx.runtime.node.config import DEFAULT_HOST, Destination, NodeConfig, parse_dest

REQUIRED = {"ae_title": "SPINEFX", "port": "11112", "data": "/tmp/node-data",
            "dest": "ORTHANC@127.0.0.1:4242"}


def test_options_give_a_config_with_defaults():
    config = NodeConfig.from_sources({**REQUIRED, "allow": "SCANNER1, SCANNER2,",
                                      "idle_seconds": None})
    assert config.port == 11112 and config.ae_title == "SPINEFX"
    assert config.dest == Destination("ORTHANC", "127.0.0.1", 4242)
    assert config.allow == ("SCANNER1", "SCANNER2")
    assert config.host == DEFAULT_HOST == "127.0.0.1"  # loopback unless asked
    assert config.idle_seconds == 10.0 and config.data == Path("/tmp/node-data")
    assert config.complete_on_release is False   # the idle time alone, unless asked
    assert config.report_skipped is False        # no unasked-for SR in a study
    assert config.parametric_map is False        # nor an unasked-for map
    assert json.loads(json.dumps(config.to_json()))["dest"] == "ORTHANC@127.0.0.1:4242"


def test_file_values_relative_to_the_file_and_options_win(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "node.json"
    path.write_text(json.dumps({"ae_title": "FROMFILE", "port": 104, "data": "data",
                                "dest": {"ae_title": "PACS", "host": "10.0.0.5", "port": 11112},
                                "allow": ["CT1", "MR1"], "idle_seconds": 2.5,
                                "watch": "drop", "retention_days": 0,
                                "complete_on_release": True}))
    config = NodeConfig.from_sources({"port": "2000", "ae_title": None,
                                      "complete_on_release": None}, path)   # an unset flag
    assert config.complete_on_release is True
    assert config.ae_title == "FROMFILE" and config.port == 2000
    assert config.data == folder / "data" and config.watch == folder / "drop"
    assert str(config.dest) == "PACS@10.0.0.5:11112" and config.allow == ("CT1", "MR1")
    assert config.idle_seconds == 2.5 and config.retention_days == 0.0


@pytest.mark.parametrize("key,value,words", [
    ("ae_title", "A" * 17, "1 to 16 characters"), ("ae_title", "BAD\\AE", "without"),
    ("ae_title", "   ", "1 to 16"), ("port", "70000", "0..65535"), ("port", "x", "port"),
    ("dest", "ORTHANC127.0.0.1:4242", "AET@HOST:PORT"), ("dest", "O@h:0", "1..65535"),
    ("dest", "@h:1", "1 to 16"), ("idle_seconds", -1, ">= 0"),
    ("idle_seconds", float("nan"), "finite"), ("allow", 5, "AE titles"),
    ("require_called_aet", "yes", "true or false"), ("max_associations", 1.5, "whole"),
    ("complete_on_release", 1, "true or false"), ("report_skipped", "no", "true or false"),
    ("parametric_map", "yes", "true or false")])
def test_bad_values_are_named(key, value, words):
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_mapping({**REQUIRED, key: value})
    assert key in str(info.value) and words in str(info.value)


def test_missing_required_and_unknown_keys():
    with pytest.raises(ConfigError, match="dest is required .--dest"):
        NodeConfig.from_mapping({k: v for k, v in REQUIRED.items() if k != "dest"})
    with pytest.raises(ConfigError, match="unknown key.*idle_secs.*the keys are"):
        NodeConfig.from_mapping({**REQUIRED, "idle_secs": 3})
    with pytest.raises(ConfigError, match="retry_max_seconds .* below"):
        NodeConfig.from_mapping({**REQUIRED, "retry_initial_seconds": 10,
                                 "retry_max_seconds": 1})


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "node.json"
    bad.write_text('{"port": 1,\n "ae_title": }')
    with pytest.raises(ConfigError, match=r"node.json: not valid JSON \(line 2"):
        NodeConfig.from_sources({}, bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="a JSON object"):
        NodeConfig.from_sources({}, bad)
    bad.write_text(json.dumps({**REQUIRED, "colour": "blue"}))
    with pytest.raises(ConfigError, match="node.json: unknown key"):
        NodeConfig.from_sources({}, bad)
    with pytest.raises(ConfigError, match="config file not found"):
        NodeConfig.from_sources({}, tmp_path / "missing.json")


def test_parse_dest_keeps_ipv6_and_names():
    assert parse_dest("PACS@[::1]:104") == Destination("PACS", "::1", 104)
    assert parse_dest("MY AE@pacs.example:11112").host == "pacs.example"


def test_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["node", "--data", str(tmp_path), "--port", "1", "--ae-title", "A",
                 "--dest", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dest: expected AET@HOST:PORT") and "Traceback" not in err
    assert main(["node", "status"]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["node", "status", "--data", str(tmp_path / "none")]) == 2
    assert "node.sqlite missing" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["pynetdicom", "highdicom"])
def test_missing_node_extra_is_one_line(module, tmp_path):
    code = (f"import sys; sys.modules[{module!r}] = None; from spinefx.cli import main; "
            f"sys.exit(main(['node', '--data', {str(tmp_path / 'd')!r}, '--port', '0', "
            "'--ae-title', 'A', '--dest', 'P@127.0.0.1:1']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("error: spinefx node needs the 'node' extra: pip install "
                                  f"'spinefx[node]' (no module named {module!r})")
