# envctl — see README.md.
SHELL := bash
GO ?= go
BIN := bin/envctl
PROFILE ?= crio-1.34-runc
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
export CGO_ENABLED := 0

.PHONY: all build test unit fuzz e2e lint host image up bench clean

all: build

# The envctl binary is static (CGO_ENABLED=0): it also serves as the
# workload binary inside the test images.
build:
	$(GO) build -trimpath -ldflags "-X main.Version=$(VERSION)" -o $(BIN) ./cmd/envctl

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...

unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 20s ./profiles

# Prepare the host: packages, libvirt daemons (idempotent).
host:
	bash scripts/host-setup.sh

# Build the local Debian image once; later runs reuse the cached one.
image: build host
	$(BIN) image build debian-12 --if-needed

e2e: build host image
	ENVCTL_BIN=$(abspath $(BIN)) $(GO) test -count=1 -tags e2e -timeout 80m -v -run 'E2E' ./cmd/envctl

# Everything CI runs.
test: lint unit fuzz e2e

# The main job: the default profile, end to end.
up: build host image
	$(BIN) lock $(PROFILE)
	$(BIN) up $(PROFILE)

bench: build host image
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends virtinst genisoimage bc openssh-client >/dev/null
	ENVCTL_BIN=$(abspath $(BIN)) $(GO) test -tags e2e -run '^$$' -bench . -benchtime 1x -timeout 80m ./cmd/envctl | tee /tmp/envctl-bench.log

clean:
	rm -rf bin
