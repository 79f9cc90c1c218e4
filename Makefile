# mailarchive: archive every message Postfix handles.
#   make          build every command into bin/
#   make test     install the real peers if missing, vet, gofmt check, go test -race
#   make demo     run proxy_archiver in front of a sink and show the archive
#   make bench    benchmarks (see README)
#   make fuzz     run each fuzz target for FUZZTIME

GO       ?= go
PKG      := github.com/postfix-archive/mailarchive
# The nearest tag (v0.1.0, v0.1.0-3-g46e69e8); 0.1.0-dev while there is none.
VERSION  ?= $(shell git describe --tags 2>/dev/null || echo 0.1.0-dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X $(PKG)/internal/buildinfo.Version=$(VERSION) -X $(PKG)/internal/buildinfo.Commit=$(COMMIT)
CMDS     := $(notdir $(wildcard cmd/*))
FUZZTIME ?= 60s

.PHONY: all build test peers vet fmt-check unit demo bench fuzz clean FORCE

all: build

build: $(CMDS:%=bin/%)

# Static binaries (no cgo): the archiver is installed setuid, where a
# dynamically linked binary would invite loader surprises, and static
# binaries run under systemd's hardening without extra paths.
bin/%: FORCE
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $@ ./cmd/$*

peers:
	./scripts/install-peers.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 -timeout 25m ./...

test: peers vet fmt-check build unit

demo: build
	$(GO) run ./scripts/demo

# BENCHFLAGS: e.g. "-scale 0.25 -rounds 3 -only proxy,memory" (go run ./scripts/bench -h)
bench: build
	$(GO) run ./scripts/bench $(BENCHFLAGS)

fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin demo-out
