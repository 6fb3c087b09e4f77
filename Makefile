# peerfs: `make run` starts a local three-node demo network, `make test` runs
# every test. Both set the machine up first (see scripts/setup.sh).
# `make install` puts peerfs, its systemd unit, mount helper and man page in
# place (PREFIX, DESTDIR honoured; see "Installing" in README.md).
SHELL := /bin/bash
STAMP := node_modules/.peerfs-setup

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib/peerfs
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
# mount(8) looks for mount.<type> helpers in /sbin only, whatever PREFIX is.
MOUNTHELPERDIR ?= /sbin
NODE ?= $(shell command -v node)

.PHONY: setup build run test unit bench clean install uninstall

# Setup runs again when what it installs from changes. The stamp holds a
# digest of its inputs, not a time: a checkout or a rebase rewrites files'
# mtimes without changing them, and must not reinstall node_modules.
SETUP_INPUTS := package.json package-lock.json patches/fuse-native+2.2.6.patch scripts/setup.sh scripts/rebuild-fuse.mjs

setup:
	@sum=$$(cat $(SETUP_INPUTS) | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$sum" ]; then \
	  bash scripts/setup.sh && echo "$$sum" > $(STAMP); \
	fi

build: setup
	./node_modules/.bin/tsc -p .
	@# Its #! line starts node with the daemon's flags (src/cli/node-flags.ts).
	chmod +x dist/src/cli.js

run: build
	node scripts/demo.mjs

test: build
	./node_modules/.bin/vitest run

unit: build
	./node_modules/.bin/vitest run test/unit

# Without an sshd on the machine, the rsync-over-ssh anchor runs Debian's
# openssh-server sshd, fetched with `apt-get download` into .cache/ here and
# run from there, never installed (bench/sshd.sh).
bench: build
	node dist/bench/run.js

clean:
	rm -rf dist node_modules demo .cache

# Runs from what `make build` left: the compiled tree and the run-time
# node_modules (scripts/prod-deps.mjs lists them; build and test tools stay).
install: build
	@test -n "$(NODE)" || { echo "install: node not found; pass NODE=/path/to/node" >&2; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/dist $(DESTDIR)$(LIBDIR)/node_modules \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MOUNTHELPERDIR)
	rm -rf $(DESTDIR)$(LIBDIR)/dist/src $(DESTDIR)$(LIBDIR)/node_modules/*
	cp -R dist/src $(DESTDIR)$(LIBDIR)/dist/src
	install -m 0644 package.json $(DESTDIR)$(LIBDIR)/package.json
	node scripts/prod-deps.mjs | while read -r dir; do \
		mkdir -p "$(DESTDIR)$(LIBDIR)/$$(dirname "$$dir")" && cp -RL "$$dir" "$(DESTDIR)$(LIBDIR)/$$dir" || exit 1; \
	done
	sed 's|@NODE@|$(NODE)|' packaging/peerfs.in > $(DESTDIR)$(BINDIR)/peerfs
	chmod 0755 $(DESTDIR)$(BINDIR)/peerfs
	sed 's|@BINDIR@|$(BINDIR)|' packaging/mount.fuse.peerfs.in > $(DESTDIR)$(MOUNTHELPERDIR)/mount.fuse.peerfs
	chmod 0755 $(DESTDIR)$(MOUNTHELPERDIR)/mount.fuse.peerfs
	sed 's|@BINDIR@|$(BINDIR)|' packaging/peerfs@.service.in > $(DESTDIR)$(UNITDIR)/peerfs@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/peerfs@.service
	install -m 0644 packaging/peerfs.1 $(DESTDIR)$(MANDIR)/man1/peerfs.1

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR)
	rm -f $(DESTDIR)$(BINDIR)/peerfs $(DESTDIR)$(MOUNTHELPERDIR)/mount.fuse.peerfs \
		$(DESTDIR)$(UNITDIR)/peerfs@.service $(DESTDIR)$(MANDIR)/man1/peerfs.1
