#!/usr/bin/env python3
"""The tile notes' first use case over peerfs: one program, one fd, every
neighbour.

It sits in select() on <mnt>/pkt/NN, learns who is there from the in-band
`<peer> up` / `<peer> down` records, pings every neighbour that is up once
a round (one `*` record), answers each ping with a pong to its sender, and
writes only when select() says the channel takes more: the window is end
to end, so a slow neighbour slows us down instead of losing packets.

usage: pkt-neighbours.py <mnt> <NN> [--rounds N] [--every S] [--expect id,id]
                         [--linger S] [--timeout S]

Prints `up <peer>`, `down <peer>` and `pong <peer> <round>`. With --expect,
once every expected neighbour has answered N pings it prints
`done <peer>:<pongs> ...`, goes on answering for --linger seconds (the
others may not be done yet) and exits 0; or exits 1 after --timeout.
"""
import argparse
import os
import select
import sys
import time


def record(to, payload):
    return b'%s %d\n%s' % (to.encode(), len(payload), payload)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('mnt')
    ap.add_argument('channel')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--every', type=float, default=0.5)
    ap.add_argument('--expect', default='')
    ap.add_argument('--linger', type=float, default=2)
    ap.add_argument('--timeout', type=float, default=60)
    args = ap.parse_args()
    expect = [p for p in args.expect.split(',') if p]

    fd = os.open(os.path.join(args.mnt, 'pkt', args.channel), os.O_RDWR | os.O_NONBLOCK)
    up = set()
    pongs = {}
    out = []          # whole records waiting for the channel to take them
    rnd = 0
    next_ping = time.monotonic()
    deadline = time.monotonic() + args.timeout

    done_at = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        if done_at is None and expect and all(len(pongs.get(p, ())) >= args.rounds for p in expect):
            print('done', ' '.join('%s:%d' % (p, len(pongs[p])) for p in expect), flush=True)
            done_at = now
        if done_at is not None and now >= done_at + args.linger:
            return 0
        if up and now >= next_ping:
            rnd += 1
            out.append(record('*', b'ping %d' % rnd))
            next_ping = now + args.every
        readable, writable, _ = select.select([fd], [fd] if out else [], [], max(0.0, next_ping - now) if up else args.every)

        if readable:
            while True:
                try:
                    rec = os.read(fd, (1 << 20) + 100)   # one whole record per read
                except BlockingIOError:
                    break
                head, _, payload = rec.partition(b'\n')
                peer, what = head.decode().split(' ')
                if what in ('up', 'down'):
                    (up.add if what == 'up' else up.discard)(peer)
                    print(what, peer, flush=True)
                    continue
                kind, n = payload.split(b' ')
                if kind == b'ping':
                    out.append(record(peer, b'pong ' + n))
                elif kind == b'pong' and done_at is None:
                    pongs.setdefault(peer, set()).add(int(n))
                    print('pong', peer, int(n), flush=True)

        if writable and out:
            try:
                n = os.write(fd, b''.join(out))   # several records in one write
            except BlockingIOError:
                continue
            except (ConnectionRefusedError, OSError) as e:
                # The first record cannot go (its peer went down, or has no
                # reader on this channel yet): drop it, keep the rest.
                print('dropped', out.pop(0).split(b' ')[0].decode(), os.strerror(e.errno), file=sys.stderr, flush=True)
                continue
            while out and n >= len(out[0]):      # a short write ends on a record boundary
                n -= len(out.pop(0))
    print('timed out', {p: len(pongs.get(p, ())) for p in expect}, file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main())
