#!/usr/bin/env python3
"""A peerfs service in Python: replies with the request upper-cased.

Usage: upper-server.py <mountpoint> <NN>

Several copies may serve the same NN; each request goes to one of them.
"""
import os
import sys

mnt, nn = sys.argv[1], sys.argv[2]
fd = os.open(os.path.join(mnt, 'svc', nn), os.O_RDWR)
print(f'serving {mnt}/svc/{nn}', file=sys.stderr, flush=True)
while True:
    data = os.read(fd, 1 << 20)
    head, _, payload = data.partition(b'\n')
    peer, length = head.decode().split()
    while len(payload) < int(length):          # a request larger than one read
        payload += os.read(fd, 1 << 20)
    os.write(fd, payload.upper())
    print(f'answered {peer} ({length} bytes)', file=sys.stderr, flush=True)
