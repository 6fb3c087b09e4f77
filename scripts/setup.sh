#!/usr/bin/env bash
# Brings a fresh Debian machine to the point where peerfs builds, mounts and
# tests: fusermount (from fuse3 when it can: Debian's `fuse` package would
# remove fuse3 and sshfs), libfuse.so.2 for fuse-native, the npm
# dependencies, our fuse-native patch and its rebuild from source.
# It only ever adds packages; it never removes what a user has.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
# fuse3 provides /bin/fusermount (and `Provides: fuse`); libfuse2 coexists
# with it. Only where fuse3 cannot be had do we fall back to `fuse`.
if ! command -v fusermount >/dev/null 2>&1; then
  if dpkg -s fuse >/dev/null 2>&1; then :; else need_pkgs+=(fuse3); fi
fi
/sbin/ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2 ' || need_pkgs+=(libfuse2)
# Tests also exercise the tree with these, the way users do.
command -v rsync >/dev/null 2>&1 || need_pkgs+=(rsync)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
command -v cc >/dev/null 2>&1 || need_pkgs+=(gcc)
command -v make >/dev/null 2>&1 || need_pkgs+=(make)
command -v g++ >/dev/null 2>&1 || need_pkgs+=(g++)

# The choice alone, for the test that it never picks a package that would
# remove fuse3 (test/unit/setup.test.ts).
if [ "${1:-}" = "--print-packages" ]; then echo "${need_pkgs[*]}"; exit 0; fi

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "setup: missing Debian packages: ${need_pkgs[*]}" >&2
    echo "setup: install them as root:  apt-get install ${need_pkgs[*]}" >&2
    exit 1
  fi
fi

if [ ! -e /dev/fuse ]; then
  echo "setup: /dev/fuse is missing: load the fuse kernel module (modprobe fuse) or run with --device /dev/fuse" >&2
  exit 1
fi

npm ci --no-audit --no-fund --loglevel=error
# npm does not run dependency install scripts; patch and rebuild explicitly.
./node_modules/.bin/patch-package --error-on-fail
node scripts/rebuild-fuse.mjs
