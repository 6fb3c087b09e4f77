#!/usr/bin/env python3
"""The counter daemon from the tile notes, written only against the tree.

Each node watches a local counter file, advertises its value to every
neighbour every few seconds (service NN, default 10), and keeps a table of
the neighbours' values, rewritten atomically to a table file.

Usage: counter.py <mountpoint> <counter-file> <table-file> [--svc 10] [--every 2]

One select() loop serves incoming adverts (readable svc/NN) and times the
outgoing ones; adverts go out through non-blocking request files, so a slow
or dead neighbour never stalls the loop.
"""
import argparse
import errno
import os
import select
import time

ap = argparse.ArgumentParser()
ap.add_argument('mnt')
ap.add_argument('counter')
ap.add_argument('table')
ap.add_argument('--svc', default='10')
ap.add_argument('--every', type=float, default=2.0)
a = ap.parse_args()

server = os.open(os.path.join(a.mnt, 'svc', a.svc), os.O_RDWR | os.O_NONBLOCK)
table = {}
outgoing = {}          # fd -> neighbour, adverts waiting for their reply


def read_counter():
    try:
        with open(a.counter) as f:
            return f.read().strip() or '0'
    except FileNotFoundError:
        return '0'


def save_table():
    tmp = a.table + '.tmp'
    with open(tmp, 'w') as f:
        for peer in sorted(table):
            f.write(f'{peer} {table[peer]}\n')
    os.replace(tmp, a.table)


def advertise():
    value = read_counter().encode()
    for peer in sorted(os.listdir(os.path.join(a.mnt, 'peers'))):
        with open(os.path.join(a.mnt, 'peers', peer, 'state')) as f:
            if f.read().strip() != 'up':
                continue
        fd = os.open(os.path.join(a.mnt, 'peers', peer, 'svc', a.svc), os.O_RDWR | os.O_NONBLOCK)
        os.write(fd, value)
        outgoing[fd] = peer


next_advert = time.monotonic()
print(f'counter on {a.mnt}: serving svc/{a.svc}, advertising every {a.every}s', flush=True)
while True:
    now = time.monotonic()
    if now >= next_advert:
        advertise()
        next_advert = now + a.every
    ready, _, _ = select.select([server, *outgoing], [], [], max(0.0, next_advert - now))
    for fd in ready:
        if fd == server:
            try:
                data = os.read(server, 65536)
            except BlockingIOError:
                continue          # another reader took it
            head, _, value = data.partition(b'\n')
            table[head.split()[0].decode()] = value.decode().strip()
            os.write(server, b'ok')
            save_table()
        else:
            peer = outgoing.pop(fd)
            try:
                os.read(fd, 100)
            except OSError as e:
                print(f'advert to {peer}: {errno.errorcode.get(e.errno, e.errno)}', flush=True)
            os.close(fd)
