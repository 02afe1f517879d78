import subprocess
import sys


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "distillery.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_and_version():
    result = run_cli("--help")
    assert result.returncode == 0 and "Distil tool-using agents" in result.stdout
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("distillery ")


def test_unknown_model_uri_is_one_line_without_traceback():
    from distillery.errors import ConfigError
    from distillery.models import load_model

    try:
        load_model("gemini:pro")
    except ConfigError as exc:
        assert "unknown model URI 'gemini:pro'" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("expected ConfigError")
