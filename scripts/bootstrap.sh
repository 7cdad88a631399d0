#!/usr/bin/env bash
# Install everything cm-remediate's tests, demo and benchmarks need on Debian 12:
# PostgreSQL 15 + psqlODBC + unixODBC (the SQL Server stand-in), Node.js for Azurite,
# the Python virtual environment, Azurite itself (devstack/node_modules) and the Bicep
# tools of tests/infra (checkov and pycep-parser, in a virtual environment of their own).
#
# Idempotent: a second run only checks and takes seconds. Runs from any directory.
# Environment:
#   VENV_DIR        virtual environment to create/update (default: <repo>/.venv)
#   INFRA_VENV_DIR  virtual environment of the Bicep tools (default: <repo>/.venv-infra)
#   PYTHON          interpreter to build the venvs from (default: python3.11, else python3, ...)
set -euo pipefail

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'printf "bootstrap: FAILED (line %s: %s)\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

# Resolve VENV_DIR against the caller's directory before moving to the repo root.
VENV_DIR="$(realpath -m "${VENV_DIR:-$(dirname "$0")/../.venv}")"
INFRA_VENV_DIR="$(realpath -m "${INFRA_VENV_DIR:-$(dirname "$0")/../.venv-infra}")"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ -f pyproject.toml && -f devstack/package-lock.json ]] \
    || die "$ROOT does not look like the cm-remediate repository"

# --- privileges -----------------------------------------------------------------
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        # No terminal (CI): fail instead of waiting for a password prompt.
        if [[ -t 0 ]]; then SUDO=(sudo); else SUDO=(sudo -n); fi
    else
        SUDO=(__no_sudo__)
    fi
fi
as_root() {
    [[ ${SUDO[0]:-} == __no_sudo__ ]] && die "need root (or sudo) to run: $*"
    "${SUDO[@]}" "$@"
}

installed() {
    # dpkg -s also succeeds for removed packages whose config files remain.
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

python_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

find_python() {
    local c
    for c in ${PYTHON:-} python3.11 python3 python3.12 python3.13; do
        if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

# Make $1 a virtual environment of Python >= 3.11: create it, or rebuild one that is
# broken (its interpreter is gone), too old or half made; only a venv is ever deleted.
ensure_venv() {
    local dir=$1 py
    if [[ -e $dir ]] && ! python_ok "$dir/bin/python"; then
        [[ -f $dir/pyvenv.cfg ]] || die "$dir exists but is not a Python >= 3.11 virtual environment"
        say "replacing $dir: its Python is missing, broken or older than 3.11"
        rm -rf "$dir"
    fi
    [[ -e $dir ]] && return 0
    py="$(find_python)" || die "Python >= 3.11 not found for $dir (tried ${PYTHON:+$PYTHON, }python3.11, python3, python3.12, python3.13); set PYTHON=/path/to/python3.11"
    say "creating $dir with $py ($("$py" --version 2>&1))"
    if ! "$py" -m venv "$dir"; then
        rm -rf "$dir"
        die "python -m venv failed for $dir (on Debian: apt-get install python3-venv)"
    fi
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
}

# --- what apt must provide ------------------------------------------------------
command -v dpkg-query >/dev/null 2>&1 || die "dpkg not found: this script supports Debian 12 only"
if [[ -r /etc/debian_version && $(cut -d. -f1 /etc/debian_version) != 12 ]]; then
    say "warning: tested on Debian 12, this is Debian $(cat /etc/debian_version)"
fi

wanted=(postgresql odbc-postgresql unixodbc unixodbc-dev gcc)
if ! command -v node >/dev/null 2>&1; then
    wanted+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then
    # Debian's npm depends on Debian's nodejs, which would replace another build
    # (NodeSource's, say): only add npm beside Debian's own node.
    if [[ $(dpkg-query -W -f='${Version}' nodejs 2>/dev/null) == *dfsg* ]]; then
        wanted+=(npm)
    else
        die "node is installed ($(command -v node)) but npm is not: install the npm that comes with that Node.js"
    fi
fi

PY="$(find_python || true)"
if [[ -z $PY ]]; then
    # Debian 12's python3 is 3.11.
    wanted+=(python3 python3-venv python3-dev)
elif dpkg -S "$(readlink -f "$PY")" >/dev/null 2>&1; then
    # Debian's own Python: venv (ensurepip) and headers come in separate packages.
    pyver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    wanted+=("python${pyver}-venv" "python${pyver}-dev")
fi

missing=()
for pkg in "${wanted[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    say "apt packages present"
else
    [[ ${SUDO[0]:-} == __no_sudo__ ]] \
        && die "missing Debian packages (${missing[*]}): run this script as root or install sudo"
    say "installing with apt: ${missing[*]}"
    apt_opts=(-y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" --no-install-recommends "${missing[@]}"
    say "apt packages installed"
fi

# --- ODBC driver ----------------------------------------------------------------
DRIVER="PostgreSQL Unicode"
if odbcinst -q -d -n "$DRIVER" >/dev/null 2>&1; then
    say "ODBC driver \"$DRIVER\" registered"
else
    template=/usr/share/psqlodbc/odbcinst.ini.template
    [[ -f $template ]] || die "ODBC driver \"$DRIVER\" is not registered and $template is missing (package odbc-postgresql)"
    say "registering ODBC driver \"$DRIVER\" from $template"
    as_root odbcinst -i -d -f "$template" >/dev/null
    odbcinst -q -d -n "$DRIVER" >/dev/null 2>&1 || die "ODBC driver \"$DRIVER\" still not registered (odbcinst -q -d)"
fi

# --- Node.js --------------------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node not found after installing nodejs"
command -v npm >/dev/null 2>&1 || die "npm not found after installing npm"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if (( node_major < 18 )); then
    die "Node.js $(node --version) is too old for Azurite 3.35.0: need 18 or later (20 is tested)"
fi
(( node_major >= 20 )) || say "warning: Node.js $(node --version); Azurite runs, but Node 20 is what is tested"

# --- Python virtual environment -------------------------------------------------
ensure_venv "$VENV_DIR"

stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

py_stamp="$(stamp_of pyproject.toml requirements.txt)-$("$VENV_DIR/bin/python" -c 'import sys; print(sys.version.split()[0])')"
py_stamp_file="$VENV_DIR/.bootstrap-stamp"
if [[ -f $py_stamp_file && $(cat "$py_stamp_file") == "$py_stamp" ]]; then
    say "python packages up to date ($VENV_DIR)"
else
    say "installing python packages: pip install -e '.[dev]' into $VENV_DIR"
    rm -f "$py_stamp_file"
    "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
    printf '%s\n' "$py_stamp" >"$py_stamp_file"
    say "python packages installed"
fi

# --- Microsoft's Python worker library (devstack/functions_host.py) -------------
# azure-functions-runtime is the worker's library half; its metadata says Python 3.13+
# but it runs on 3.11. The generated FunctionRpc_pb2 modules it needs from its caller
# are published only inside the azure-functions-runtime-v1 wheel, as a top-level
# tests/protos folder: that wheel is downloaded (hash pinned) and only that folder is
# unpacked, as package cmr_worker_protos, without its grpc stubs. The wheel itself is
# never installed: its top-level "tests" package would shadow ours.
worker_requirements=devstack/worker-requirements.txt
PROTOS_WHEEL=azure-functions-runtime-v1==1.2.0
PROTOS_WHEEL_SHA256=6ae0abb681e28c61a404b52e1c4481f203bb113e5027fbe908989ea9585a02a0
site_packages="$("$VENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
worker_stamp="$(stamp_of "$worker_requirements")-$PROTOS_WHEEL-$PROTOS_WHEEL_SHA256"
worker_stamp_file="$site_packages/cmr_worker_protos/.bootstrap-stamp"
if [[ -f $worker_stamp_file && $(cat "$worker_stamp_file") == "$worker_stamp" ]]; then
    say "worker library up to date (azure-functions-runtime, cmr_worker_protos)"
else
    say "installing the worker library: pip install --ignore-requires-python -r $worker_requirements"
    "$VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check \
        --ignore-requires-python -r "$worker_requirements"
    wheel_dir="$(mktemp -d)"
    "$VENV_DIR/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
        --python-version 3.13 --only-binary=:all: -d "$wheel_dir" "$PROTOS_WHEEL"
    "$VENV_DIR/bin/python" - "$wheel_dir" "$site_packages/cmr_worker_protos" "$PROTOS_WHEEL_SHA256" <<'PY'
import hashlib, pathlib, shutil, sys, zipfile

wheel_dir, target, expected = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(wheel,) = wheel_dir.glob("*.whl")
digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
if digest != expected:
    sys.exit(f"{wheel.name}: sha256 {digest}, expected {expected}")
shutil.rmtree(target, ignore_errors=True)
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if not (name.startswith("tests/protos/") and name.endswith("_pb2.py")):
            continue
        path = target / name.removeprefix("tests/protos/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(archive.read(name))
for folder in [target, *(p for p in target.rglob("*") if p.is_dir())]:
    (folder / "__init__.py").touch()
# The worker library reads message classes off the module it is given.
(target / "__init__.py").write_text(
    "from .FunctionRpc_pb2 import *  # noqa: F403\n"
    "from .shared.NullableTypes_pb2 import *  # noqa: F403\n"
)
PY
    rm -rf "$wheel_dir"
    "$VENV_DIR/bin/python" -c 'import azure_functions_runtime, cmr_worker_protos; cmr_worker_protos.InvocationRequest' \
        || die "the worker library does not import (azure_functions_runtime, cmr_worker_protos)"
    printf '%s\n' "$worker_stamp" >"$worker_stamp_file"
    say "worker library installed"
fi

# --- Azurite --------------------------------------------------------------------
npm_stamp="$(stamp_of devstack/package-lock.json)-node${node_major}"
npm_stamp_file=devstack/node_modules/.bootstrap-stamp
if [[ -x devstack/node_modules/.bin/azurite && -f $npm_stamp_file && $(cat "$npm_stamp_file") == "$npm_stamp" ]]; then
    say "azurite up to date (devstack/node_modules)"
else
    say "installing azurite and hyco-ws: npm ci in devstack/"
    (cd devstack && npm ci --no-audit --no-fund --loglevel=error)
    [[ -x devstack/node_modules/.bin/azurite ]] || die "npm ci finished but devstack/node_modules/.bin/azurite is missing"
    printf '%s\n' "$npm_stamp" >"$npm_stamp_file"
    say "azurite $(node devstack/node_modules/.bin/azurite --version) installed"
fi

# --- Bicep tools (tests/infra) --------------------------------------------------
# checkov pins an older pycep-parser than the project would pick, so both live in a
# venv of their own; the tests run them as subprocesses, never import them.
tools_requirements=tests/infra/requirements-tools.txt
ensure_venv "$INFRA_VENV_DIR"
infra_stamp="$(stamp_of "$tools_requirements")-$("$INFRA_VENV_DIR/bin/python" -c 'import sys; print(sys.version.split()[0])')"
infra_stamp_file="$INFRA_VENV_DIR/.bootstrap-stamp"
if [[ -f $infra_stamp_file && $(cat "$infra_stamp_file") == "$infra_stamp" && -x $INFRA_VENV_DIR/bin/checkov ]]; then
    say "bicep tools up to date ($INFRA_VENV_DIR)"
else
    say "installing bicep tools: pip install -r $tools_requirements into $INFRA_VENV_DIR"
    rm -f "$infra_stamp_file"
    "$INFRA_VENV_DIR/bin/python" -m pip install -q --disable-pip-version-check -r "$tools_requirements"
    "$INFRA_VENV_DIR/bin/checkov" --version >/dev/null || die "checkov installed but does not run ($INFRA_VENV_DIR/bin/checkov --version)"
    printf '%s\n' "$infra_stamp" >"$infra_stamp_file"
    say "bicep tools installed: checkov $("$INFRA_VENV_DIR/bin/checkov" --version)"
fi

say "done"
