# mailarchive: archive every message Postfix handles.
#   make          build every command into bin/
#   make test     install the real peers if missing, vet, gofmt check,
#                 arm64 cross-build, go test -race
#   make demo     capture through proxy_archiver, then search, seal, verify, prove, export
#   make bench    benchmarks (see README)
#   make fuzz     run each fuzz target for FUZZTIME
#   make install  install binaries, systemd units, docs and the archive
#                 directory (PREFIX=/usr/local, DESTDIR= for staging)

GO       ?= go
PKG      := github.com/postfix-archive/mailarchive
# The nearest tag (v0.1.0, v0.1.0-3-g46e69e8); 0.1.0-dev while there is none.
VERSION  ?= $(shell git describe --tags 2>/dev/null || echo 0.1.0-dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X $(PKG)/internal/buildinfo.Version=$(VERSION) -X $(PKG)/internal/buildinfo.Commit=$(COMMIT)
CMDS     := $(notdir $(wildcard cmd/*))

# make install. PREFIX and DESTDIR as usual; the archive root is compiled
# into the archiver (delivering users cannot choose it), so ARCHIVE_DIR
# applies at build time too.
PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
DOCDIR       ?= $(PREFIX)/share/doc/mailarchive
UNITDIR      ?= /etc/systemd/system
ARCHIVE_DIR  ?= /var/spool/mailarchive
ARCHIVE_USER ?= mailarchive
FUZZTIME ?= 60s

.PHONY: all build test peers vet fmt-check cross unit demo bench fuzz clean install FORCE

all: build

build: $(CMDS:%=bin/%)

# Static binaries (no cgo): the archiver is installed setuid, where a
# dynamically linked binary would invite loader surprises, and static
# binaries run under systemd's hardening without extra paths.
bin/%: FORCE
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $@ ./cmd/$*

bin/archiver: LDFLAGS += -X $(PKG)/wrapper.DefaultArchiveDir=$(ARCHIVE_DIR)

peers:
	./scripts/install-peers.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# The binaries must build for linux/arm64 too (no raw syscall numbers).
cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -o /dev/null ./...

unit:
	$(GO) test -race -count=1 -timeout 25m ./...

test: peers vet fmt-check cross build unit

# Built, not "go run": a signal to make (or a closed pipe, make demo | head)
# then reaches the demo itself, which stops everything it started.
# DEMO_FLAGS=--keep leaves them running for your own mail until ^C.
demo: build
	$(GO) build -o bin/demo ./scripts/demo
	bin/demo $(DEMO_FLAGS)

# BENCHFLAGS: e.g. "-scale 0.25 -rounds 3 -only proxy,memory" (go run ./scripts/bench -h)
bench: build
	$(GO) run ./scripts/bench $(BENCHFLAGS)

# Every fuzz target runs for FUZZTIME even when an earlier one fails; the
# failures (and their testdata/fuzz/ reproducers) are listed at the end.
fuzz:
	@failed=""; \
	for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || failed="$$failed $$pkg.$$f"; \
	  done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: FAILED:$$failed"; exit 1; fi; echo "fuzz: all targets passed"

clean:
	rm -rf bin demo-out

# install: the daemons and the filer 0755; the archiver setuid+setgid to
# ARCHIVE_USER (mode 6755) and the archive root and tmp/ owned by it, mode
# 2750: the permission model of wrapper/install.sh, which does that part
# when installing for real (DESTDIR empty, as root), creating the user if
# missing. When staging into DESTDIR, the same modes are set here, and the
# owner too if ARCHIVE_USER exists and we are root; otherwise the package
# must chown ARCHIVE_DIR, ARCHIVE_DIR/tmp and BINDIR/archiver to it (chown
# clears the set-ID bits: chmod 6755 after it). smtpsink is a test tool and
# is not installed. The units name /usr/local/bin and /var/spool/mailarchive;
# they are rewritten for BINDIR and ARCHIVE_DIR.
install: build
	install -d -m 0755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	install -m 0755 bin/proxy_archiver bin/milter_archiver bin/filer bin/mailarchive $(DESTDIR)$(BINDIR)/
	for u in postfix-examples/systemd/*.service postfix-examples/filer/*.service postfix-examples/filer/*.timer; do \
	  sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/var/spool/mailarchive|$(ARCHIVE_DIR)|g' \
	      -e 's|/usr/local/share/doc/mailarchive|$(DOCDIR)|g' $$u > $(DESTDIR)$(UNITDIR)/$${u##*/} && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$${u##*/} || exit 1; \
	done
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	@set -e; \
	if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then \
	  wrapper/install.sh --binary bin/archiver --bindir $(BINDIR) \
	    --archive-dir $(ARCHIVE_DIR) --user $(ARCHIVE_USER); \
	else \
	  install -d -m 2750 $(DESTDIR)$(ARCHIVE_DIR) $(DESTDIR)$(ARCHIVE_DIR)/tmp; \
	  chmod 2750 $(DESTDIR)$(ARCHIVE_DIR) $(DESTDIR)$(ARCHIVE_DIR)/tmp; \
	  install -m 0755 bin/archiver $(DESTDIR)$(BINDIR)/archiver; \
	  if [ "$$(id -u)" -eq 0 ] && getent passwd $(ARCHIVE_USER) >/dev/null; then \
	    g=$$(id -gn $(ARCHIVE_USER)); \
	    chown $(ARCHIVE_USER):$$g $(DESTDIR)$(ARCHIVE_DIR) $(DESTDIR)$(ARCHIVE_DIR)/tmp $(DESTDIR)$(BINDIR)/archiver; \
	  else \
	    echo "install: not root or no user $(ARCHIVE_USER): chown $(ARCHIVE_USER): $(ARCHIVE_DIR) $(ARCHIVE_DIR)/tmp $(BINDIR)/archiver, then chmod 6755 $(BINDIR)/archiver" >&2; \
	  fi; \
	  chmod 6755 $(DESTDIR)$(BINDIR)/archiver; \
	fi
	@echo "installed into $(DESTDIR)$(PREFIX); next: systemctl daemon-reload, then see the README's Quick start"
