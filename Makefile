# peerfs: `make run` starts a local three-node demo network, `make test` runs
# every test. Both set the machine up first (see scripts/setup.sh).
SHELL := /bin/bash
STAMP := node_modules/.peerfs-setup

.PHONY: setup build run test unit bench clean

setup: $(STAMP)

$(STAMP): package.json package-lock.json patches/fuse-native+2.2.6.patch scripts/setup.sh scripts/rebuild-fuse.mjs
	bash scripts/setup.sh
	touch $@

build: setup
	./node_modules/.bin/tsc -p .

run: build
	node scripts/demo.mjs

test: build
	./node_modules/.bin/vitest run

unit: build
	./node_modules/.bin/vitest run test/unit

bench: build
	node dist/bench/run.js

clean:
	rm -rf dist node_modules demo
