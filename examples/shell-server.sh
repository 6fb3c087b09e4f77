#!/bin/sh
# A peerfs service in plain sh: answers service NN with the request reversed
# by `rev`, one request per read. Usage: shell-server.sh <mountpoint> <NN>
set -eu
mnt=$1
nn=$2
exec 3<>"$mnt/svc/$nn"
echo "serving $mnt/svc/$nn" >&2
while :; do
  # One read returns one whole request: "<peer> <length>\n<payload>".
  req=$(dd bs=1M count=1 <&3 2>/dev/null)
  peer=${req%% *}
  payload=$(printf '%s\n' "$req" | tail -n +2)
  printf '%s' "$(printf '%s' "$payload" | rev)" >&3
  echo "answered $peer" >&2
done
