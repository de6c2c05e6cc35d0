"""The suite's own guard (conftest.py): with CI set, a missing or broken
optional test dependency fails the run with a message naming it; without CI,
the tests that need it skip, and the skip names it. Each case runs pytest in a
subprocess whose sys.path starts with a folder of packages that shadow the
real ones and fail to import."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# How a shadowing package fails to import: as if not installed, or installed but broken.
FAILURES = {
    "missing": 'raise ModuleNotFoundError("No module named {name!r}", name={name!r})',
    "broken": 'raise OSError("lib{name}.so: cannot open shared object file")',
}


def run_pytest(tmp_path, shadows, ci, paths, *options):
    """pytest on `paths` (files of tests/) while each package of `shadows`
    (name -> 'missing' | 'broken') fails to import."""
    folder = tmp_path / "shadow"
    for name, how in shadows.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(FAILURES[how].format(name=name) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    if ci:
        env["CI"] = "true"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *options,
                             *[str(TESTS / p) for p in paths]],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    return result, result.stdout + result.stderr


def test_ci_fails_the_run_when_torch_and_sklearn_are_missing(tmp_path):
    result, output = run_pytest(tmp_path, {"torch": "missing", "sklearn": "missing"}, True,
                                ["test_nn.py"], "--collect-only")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output[-3000:]
    assert "CI is set" in output, output[-3000:]
    for module in ("torch", "sklearn"):
        assert f"{module} (" in output and f"No module named '{module}'" in output, output[-3000:]


def test_ci_fails_the_run_when_torch_is_broken(tmp_path):
    result, output = run_pytest(tmp_path, {"torch": "broken"}, True, ["test_nn.py"], "--collect-only")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, output[-3000:]
    assert "torch (" in output and "OSError: libtorch.so" in output, output[-3000:]


def test_ci_starts_the_run_when_everything_imports(tmp_path):
    """The same run, shadowing only a package no test needs: collection happens."""
    result, output = run_pytest(tmp_path, {"not_a_dependency_of_fastnn": "missing"}, True,
                                ["test_nn.py"], "--collect-only")
    assert result.returncode == pytest.ExitCode.OK, output[-3000:]
    assert "test_nn.py::" in result.stdout, output[-3000:]


def test_without_ci_the_tests_needing_torch_skip_and_say_why(tmp_path):
    result, output = run_pytest(tmp_path, {"torch": "missing"}, False, ["test_torch_parity.py", "test_nn.py"],
                                "-k", "torch or parity", "-p", "no:randomly")
    assert result.returncode == pytest.ExitCode.OK, output[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "error" not in summary, output[-3000:]
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 2, output[-3000:]  # the parity module (skipped where `need` is called), test_nn's tests
    assert all("torch is not installed" in line for line in skips), skips
