#!/bin/sh
# The bench's sshd when the machine has none (bench/transfer.ts runs this
# only then): prints the path of a wrapper that runs the sshd of Debian's
# openssh-server package, fetched with `apt-get download` and unpacked with
# `dpkg -x` under .cache/bench-sshd/ in the checkout, never installed. The
# wrapper runs sshd in a private mount namespace where /etc/passwd is a copy
# that adds sshd's privilege-separation user and, if /run/sshd is missing,
# /run is a private tmpfs that has it; nothing outside that namespace sees
# either, and nothing under /etc or /run is changed. Libraries sshd needs
# that the machine lacks (libwrap0 on a fresh Debian) are fetched beside it.
# Fails with a one-line reason on stderr (no apt-get, no network, ...).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
cache="$top/.cache/bench-sshd"
fail () { echo "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "the fetched sshd's private mount namespace needs root"
if [ -x "$cache/sshd" ]; then echo "$cache/sshd"; exit 0; fi
command -v apt-get >/dev/null && command -v dpkg >/dev/null || fail "no apt-get/dpkg to fetch openssh-server with"
command -v unshare >/dev/null || fail "no unshare to run sshd in a private mount namespace"

mkdir -p "$top/.cache"
work=$(mktemp -d "$cache.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# Library packages a deb depends on that are neither installed nor fetched
# yet (the first of each set of alternatives, without its version).
missing_libs () {
  dpkg-deb -f "$1" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/[[:space:]]//g; s/:.*//' | grep '^lib' | while read -r p; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = 'install ok installed' ] && continue
    ls "${p}"_*.deb >/dev/null 2>&1 || echo "$p"
  done
}

fetch () {
  apt-get download "$@" >apt.log 2>&1 || fail "apt-get download $* failed: $(grep -v '^W:' apt.log | tail -n 1)"
}

fetch openssh-server
# Each fetched deb's own library needs, until none is left (bounded: a
# handful of rounds is far more than any sshd needs).
new=$(missing_libs openssh-server_*.deb)
for _ in 1 2 3 4 5; do
  [ -n "$new" ] || break
  # shellcheck disable=SC2086 # package names, one word each
  fetch $new
  next=''
  for p in $new; do next="$next $(missing_libs "${p}"_*.deb)"; done
  new=$(echo "$next" | tr ' ' '\n' | sort -u | tr '\n' ' ' | sed 's/^ *//; s/ *$//')
done
for deb in *.deb; do dpkg -x "$deb" root; done

# Every folder of the unpacked tree that holds a shared library.
dirs=$(cd root && find . \( -name '*.so' -o -name '*.so.*' \) -exec dirname {} \; | sort -u | sed 's|^\./||')
libpath () { for d in $dirs; do printf '%s' "$1/root/$d:"; done | sed 's/:$//'; }
unfound=$(LD_LIBRARY_PATH=$(libpath "$work") ldd root/usr/sbin/sshd | awk '/not found/ { print $1 }' | tr '\n' ' ')
[ -z "$unfound" ] || fail "the unpacked sshd still lacks: $unfound"

# The wrapper finds its folder from its own path, so the checkout may move.
# shellcheck disable=SC2016 # ${here} is the wrapper's, expanded when it runs
cat > sshd <<EOF
#!/bin/sh
# Runs the sshd unpacked here (made by bench/sshd.sh; see there).
here=\$(dirname "\$(readlink -f "\$0")")
pw=\$(mktemp "\$here/passwd.XXXXXX")
cat /etc/passwd > "\$pw" && chmod 644 "\$pw"
grep -q '^sshd:' /etc/passwd || echo 'sshd:x:65533:65534::/run/sshd:/usr/sbin/nologin' >> "\$pw"
# The copy stays alive through its bind mount once removed.
exec unshare -m sh -c '
  here=\$1 pw=\$2; shift 2
  mount --bind "\$pw" /etc/passwd; ok=\$?; rm -f "\$pw"; [ \$ok = 0 ] || exit 1
  [ -d /run/sshd ] || { mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m 755 /run/sshd; } || exit 1
  exec env LD_LIBRARY_PATH="$(libpath '${here}')" "\$here/root/usr/sbin/sshd" "\$@"' sshd "\$here" "\$pw" "\$@"
EOF
chmod 755 sshd .
rm -f ./*.deb apt.log
# Another run may have finished first: then its copy is kept.
mv -T "$work" "$cache" 2>/dev/null || true
echo "$cache/sshd"
