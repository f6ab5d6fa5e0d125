"""``python -m app_helpers info``."""
import subprocess
import sys

from app_helpers.cli import main


def test_info_on_a_local_directory(tiny_model_dir, capsys):
    assert main(["info", "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "2 layers x 4 heads = 8 heads" in out
    assert "device    cpu" in out


def test_info_on_a_bad_model_exits_2_with_a_message(capsys):
    assert main(["info", "--model", "gtp2"]) == 2
    assert "unknown model 'gtp2'" in capsys.readouterr().err


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "app_helpers", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "info" in done.stdout


def test_malformed_task_option_exits_2_before_loading_a_model(capsys):
    assert main(["run", "--model", "no-such-model", "--task-option", "metric"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err  # not the unknown-model error: options are checked first


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    from app_helpers import cli

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "cmd_info", interrupted)
    assert cli.main(["info", "--model", "random-gpt2"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("interrupted")
