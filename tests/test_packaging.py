"""Packaging: each platform gets exactly one MLX backend, and an unsupported one gets one line.

pyproject.toml is the one source of truth for dependencies and versions; requirements*.txt only
pick its extras (`-e .[cpu,test]`) or repeat an extra's lines, which these tests check. The
markers are evaluated here for each target platform (packaging.markers), and `pip install
--dry-run --platform ...` checks that the chosen wheels exist for that platform (marked
`network`: skipped, never failed, when the package index cannot be reached).
"""

from __future__ import annotations

import ast
import glob
import io
import os
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from conftest import REPO_ROOT

PYPROJECT = REPO_ROOT / "pyproject.toml"
MLX_BACKEND_PACKAGES = {"mlx-cpu": "cpu", "mlx-metal": "metal", "mlx-cuda-12": "cuda12", "mlx-cuda-13": "cuda13"}


# --- pyproject, read without third-party help (tomllib is 3.11+, and we support 3.10) ---------------

def _strings(array_text: str) -> list[str]:
    without_comments = re.sub(r"#[^\n]*", "", array_text)  # no requirement string here contains '#'
    return re.findall(r'"([^"]*)"', without_comments)


def _read_pyproject_by_hand(text: str) -> tuple[list[str], dict[str, list[str]], str]:
    deps = _strings(re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S).group(1))
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[[a-z]|\Z)", text, re.M | re.S).group(1)
    extras = {name: _strings(body) for name, body in
              re.findall(r"^([A-Za-z0-9_-]+) = \[(.*?)\](?=\s*(?:#[^\n]*)?\n)", section, re.M | re.S)}
    requires_python = re.search(r'^requires-python = "([^"]*)"', text, re.M).group(1)
    return deps, extras, requires_python


def read_pyproject() -> tuple[list[str], dict[str, list[str]], str]:
    """(dependencies, optional-dependencies, requires-python)."""
    text = PYPROJECT.read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return _read_pyproject_by_hand(text)
    project = tomllib.loads(text)["project"]
    return project["dependencies"], project["optional-dependencies"], project["requires-python"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="compares with tomllib, which is Python 3.11+")
def test_the_hand_reader_of_pyproject_agrees_with_tomllib():
    import tomllib

    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    expected = (project["dependencies"], project["optional-dependencies"], project["requires-python"])
    assert _read_pyproject_by_hand(PYPROJECT.read_text(encoding="utf-8")) == expected


# --- requirements*.txt: they pick pyproject's extras; they hold no versions of their own -------------

def requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #")[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def extras_of(path: Path) -> set[str]:
    """The extras a requirements file installs the project with (`-e .[cpu,test]`)."""
    picked = [re.fullmatch(r"-e \.\[([a-z0-9_,-]+)\]", line) for line in requirement_lines(path)]
    return {extra for match in picked if match for extra in match.group(1).split(",")}


def test_requirements_files_take_everything_from_pyproject():
    _, extras, _ = read_pyproject()
    all_extra_lines = {line for lines in extras.values() for line in lines}
    files = sorted(REPO_ROOT.glob("requirements*.txt"))
    assert {p.name for p in files} >= {"requirements.txt", "requirements-cuda.txt", "requirements-bench.txt"}
    for path in files:
        for line in requirement_lines(path):
            match = re.fullmatch(r"-e \.\[([a-z0-9_,-]+)\]", line)
            if match:
                unknown = set(match.group(1).split(",")) - set(extras)
                assert not unknown, f"{path.name}: extras {unknown} are not in pyproject.toml"
            else:  # a plain requirement must be one of pyproject's own lines (requirements-bench.txt: torch)
                assert line in all_extra_lines, f"{path.name}: {line!r} is not in pyproject.toml's extras"
    assert extras_of(REPO_ROOT / "requirements.txt") == {"cpu", "test"}
    assert extras_of(REPO_ROOT / "requirements-cuda.txt") == {"cuda", "test"}
    assert requirement_lines(REPO_ROOT / "requirements-bench.txt") == extras["bench"]


# --- the markers, evaluated for each target platform ---------------------------------------------

def environment(system: str, machine: str, python: str = "3.11.9") -> dict[str, str]:
    env = dict(default_environment())
    env.update(sys_platform={"Darwin": "darwin", "Linux": "linux"}[system], platform_system=system,
               platform_machine=machine, os_name="posix", python_full_version=python,
               python_version=".".join(python.split(".")[:2]), implementation_name="cpython",
               platform_python_implementation="CPython")
    return env


# target -> (marker environment, the requirements file a user of that platform runs)
TARGETS = {
    "macos-arm64": (environment("Darwin", "arm64"), "requirements.txt"),
    "linux-x86_64-cpu": (environment("Linux", "x86_64"), "requirements.txt"),
    "linux-x86_64-cuda": (environment("Linux", "x86_64"), "requirements-cuda.txt"),
    "linux-aarch64-cpu": (environment("Linux", "aarch64"), "requirements.txt"),
    "macos-x86_64": (environment("Darwin", "x86_64"), "requirements.txt"),  # Intel Mac, or Rosetta: no MLX
}


def chosen(target: str) -> list[Requirement]:
    """What pip installs for `target` from its requirements file: the markers evaluated for it."""
    env, requirements_file = TARGETS[target]
    deps, extras, _ = read_pyproject()
    lines = deps + [line for extra in sorted(extras_of(REPO_ROOT / requirements_file)) for line in extras[extra]]
    reqs = [Requirement(line) for line in lines]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({**env, "extra": ""})]


def concrete(req: Requirement) -> str:
    """The requirement without its marker: what `pip --platform` can be given (it would evaluate
    markers against the running interpreter, not the target)."""
    return req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "") + str(req.specifier)


def mlx_backends(reqs: list[Requirement], env: dict[str, str]) -> list[str]:
    backends = []
    for r in reqs:
        if r.name == "mlx":
            named = sorted(r.extras & {"cpu", "cuda", "cuda12", "cuda13"})
            backends += named or (["metal"] if env["sys_platform"] == "darwin" else ["none (plain mlx on Linux)"])
        elif r.name in MLX_BACKEND_PACKAGES:
            backends.append(MLX_BACKEND_PACKAGES[r.name])
    return backends


@pytest.mark.parametrize("target, backend, mkl", [
    ("macos-arm64", "metal", False),
    ("linux-x86_64-cpu", "cpu", True),
    ("linux-x86_64-cuda", "cuda12", False),
    ("linux-aarch64-cpu", "cpu", False),
])
def test_each_platform_gets_exactly_one_mlx_backend(target, backend, mkl):
    reqs = chosen(target)
    assert mlx_backends(reqs, TARGETS[target][0]) == [backend], [str(r) for r in reqs]
    assert any(r.name == "mkl" for r in reqs) == mkl  # MKL only under MLX's CPU backend on x86_64
    for r in reqs:
        if r.name in {"mlx", *MLX_BACKEND_PACKAGES}:
            assert r.specifier == SpecifierSet(">=0.32,<0.33"), str(r)
    if target == "linux-x86_64-cuda":
        assert not any(r.name == "mlx" and "cpu" in r.extras for r in reqs)


def test_an_intel_mac_gets_no_mlx_but_one_line_that_says_why():
    reqs = chosen("macos-x86_64")
    assert not [r for r in reqs if r.name.startswith("mlx") or r.name == "mkl"]
    import mlxgpt

    message = mlxgpt._unsupported((3, 11, 9), "darwin", "x86_64")
    assert message and "\n" not in message and "Apple silicon" in message and "arm64" in message
    # a build (pip install) stops with that line: setup.py runs the same check by importing mlxgpt
    fake_intel_mac = ("import os, runpy, sys; sys.platform = 'darwin'; "
                      "os.uname = lambda: ('Darwin', 'mac', '23.0', 'v', 'x86_64'); sys.argv = ['setup.py', '--version']; "
                      "runpy.run_path('setup.py', run_name='__main__')")
    build = subprocess.run([sys.executable, "-c", fake_intel_mac], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=120)
    assert build.returncode != 0 and build.stderr.strip() == f"error: {message}"


def test_python_floor_is_the_same_everywhere():
    import mlxgpt

    _, _, requires_python = read_pyproject()
    assert Version("3.10") in SpecifierSet(requires_python) and Version("3.9") not in SpecifierSet(requires_python)
    assert mlxgpt._unsupported((3, 9, 18), "linux", None) == "mlxgpt needs Python 3.10 or newer (this is 3.9)"
    assert mlxgpt._unsupported((3, 10, 0), "darwin", "arm64") is None
    assert mlxgpt._unsupported((3, 11, 0), "linux", None) is None


# --- pip resolves the chosen requirements for the target's wheels (asks the package index) --------

def _mlx_own_requirements(req: Requirement, env: dict[str, str]) -> list[str]:
    """mlx's per-platform dependencies (mlx-metal on macOS), read from the installed mlx's metadata:
    pip would skip them, evaluating mlx's markers for this machine instead of the target."""
    from importlib import metadata

    try:
        if metadata.version("mlx") not in req.specifier:
            return []
        requires = metadata.requires("mlx") or []
    except metadata.PackageNotFoundError:
        return []
    extras = {""} | set(req.extras)
    return [concrete(r) for r in map(Requirement, requires)
            if r.marker is None or any(r.marker.evaluate({**env, "extra": extra}) for extra in extras)]


NETWORK_TROUBLE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
                   "Name or service not known", "nodename nor servname", "getaddrinfo failed", "Network is unreachable",
                   "No route to host", "Connection refused", "Max retries exceeded", "ConnectTimeout",
                   "ReadTimeoutError", "timed out", "ProxyError", "SSLError", "Could not fetch URL",
                   "HTTP error 5", "403 Client Error", "407 Proxy")


def dry_run(platforms: list[str], requirements: list[str], tmp_path: Path) -> str:
    """`pip install --dry-run` for another platform; the pip output. Skips when the index is out of reach."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip("pip is not available in this environment")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-cache-dir",
               "--only-binary=:all:", *[arg for p in platforms for arg in ("--platform", p)],
               "--python-version", "3.11", "--implementation", "cp", "--target", str(tmp_path / "target"),
               "--retries", "1", "--timeout", "30", "--disable-pip-version-check", *requirements]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.skip("pip --dry-run took over 120 s: the package index is slow or out of reach")
    output = result.stdout + result.stderr
    if result.returncode != 0:
        if any(sign in output for sign in NETWORK_TROUBLE):
            pytest.skip("the package index could not be reached: " + next(s for s in NETWORK_TROUBLE if s in output))
        config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
        if os.environ.get("PIP_NO_INDEX", "").lower() in {"1", "true", "yes", "on"} or \
                re.search(r"no-index='(1|true|yes|on)'", config.stdout, re.I):
            pytest.skip("pip is set to use no package index (no-index)")
        pytest.fail(f"pip could not resolve {requirements} for {platforms}:\n{output[-4000:]}")
    return output


def would_install(output: str) -> set[str]:
    line = next(line for line in output.splitlines() if line.startswith("Would install"))
    return {re.sub(r"-[^-]+$", "", name).lower().replace("_", "-") for name in line.split()[2:]}


MANYLINUX = [f"manylinux_2_{minor}_{{arch}}" for minor in range(35, 16, -1)] + ["manylinux2014_{arch}"]


@pytest.mark.network
@pytest.mark.parametrize("target, platforms, expected", [
    ("macos-arm64", ["macosx_14_0_arm64"], {"mlx", "mlx-metal"}),
    ("linux-x86_64-cuda", [p.format(arch="x86_64") for p in MANYLINUX], {"mlx", "mlx-cuda-12"}),
    ("linux-aarch64-cpu", [p.format(arch="aarch64") for p in MANYLINUX], {"mlx", "mlx-cpu"}),
])
def test_pip_finds_wheels_for_the_target(target, platforms, expected, tmp_path):
    env = TARGETS[target][0]
    reqs = chosen(target)
    strings = [concrete(r) for r in reqs]
    for r in reqs:
        if r.name == "mlx":
            strings += _mlx_own_requirements(r, env)
    output = dry_run(platforms, strings, tmp_path)
    installed = would_install(output)
    assert expected <= installed, installed
    assert not ({"mlx-cpu", "mlx-cuda-12", "mlx-cuda-13", "mlx-metal", "mkl"} - expected) & installed, installed


# --- import time: one line on an unsupported Python or Mac, before anything else ----------------------

def _import_with(patch: str) -> subprocess.CompletedProcess:
    code = f"import os, sys\n{patch}\nsys.path.insert(0, {str(REPO_ROOT)!r})\nimport mlxgpt\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("patch, expected", [
    ("sys.version_info = (3, 9, 18, 'final', 0)", "ImportError: mlxgpt needs Python 3.10 or newer (this is 3.9)"),
    ("sys.platform = 'darwin'; os.uname = lambda: os.uname_result(('Darwin', 'mac', '23.0.0', 'v', 'x86_64'))",
     "ImportError: mlxgpt needs a Mac with Apple silicon and a native arm64 Python"),
])
def test_import_says_in_one_line_why_it_cannot_run(patch, expected):
    result = _import_with(patch)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(expected), result.stderr


def test_import_goes_ahead_on_apple_silicon_as_far_as_the_check_goes():
    # darwin + arm64 passes the check; what follows (the BLAS set-up) then runs as usual.
    patch = "sys.platform = 'darwin'; os.uname = lambda: os.uname_result(('Darwin', 'mac', '23.0.0', 'v', 'arm64'))"
    result = _import_with(patch)
    assert result.returncode == 0, result.stderr


def test_the_check_is_reachable_on_old_pythons():
    """mlxgpt/__init__.py uses no syntax newer than Python 3.0 (no f-strings, no annotations), so
    an old Python reaches the check instead of stopping at a SyntaxError."""
    source = (REPO_ROOT / "mlxgpt" / "__init__.py").read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.STRING:
            assert not re.match(r"[rRbB]?[fF]", token.string), f"f-string on line {token.start[0]}"
        assert token.type != getattr(tokenize, "FSTRING_START", None), f"f-string on line {token.start[0]}"
    for node in ast.walk(ast.parse(source)):
        assert not isinstance(node, ast.AnnAssign), f"annotation on line {node.lineno}"
        if isinstance(node, ast.arg):
            assert node.annotation is None, f"annotation on line {node.lineno}"
        if isinstance(node, ast.FunctionDef):
            assert node.returns is None, f"annotation on line {node.lineno}"
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            pytest.fail("a __future__ import would stop Pythons without that feature")


def _old_pythons() -> dict[str, str]:
    """{'3.9': path, ...}: Pythons older than 3.10 found on this machine (PATH, pyenv)."""
    candidates = [shutil.which(f"python{v}") for v in ("3.9", "3.8", "3.7", "2.7")]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "[23].*", "bin", "python")))
    found: dict[str, str] = {}
    for exe in filter(None, candidates):
        try:
            out = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = out.stdout.strip()
        if out.returncode == 0 and re.fullmatch(r"\d+\.\d+", version) and tuple(map(int, version.split("."))) < (3, 10):
            found.setdefault(version, exe)
    return found


def test_a_real_old_python_gets_the_one_line():
    pythons = _old_pythons()
    if not pythons:
        pytest.skip("no Python older than 3.10 on this machine")
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    for version, exe in pythons.items():
        # -B: no bytecode (Python 2 would write mlxgpt/__init__.pyc into the checkout)
        result = subprocess.run([exe, "-B", "-c", "import mlxgpt"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=60, env=clean_env)
        last = result.stderr.strip().splitlines()[-1]
        assert last == f"ImportError: mlxgpt needs Python 3.10 or newer (this is {version})", (exe, result.stderr)
