# gqlbridge: the one entry point for generating, linting, testing, running
# and benchmarking. Tools are pinned and installed into .tmp/bin on first use.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules
.DEFAULT_GOAL := help

BIN := $(abspath .tmp/bin)
export PATH := $(BIN):$(PATH)

BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION := v0.8.2

GRPC_ADDRESS ?= 127.0.0.1:50051
DEMO_ADDRESS ?= 127.0.0.1:8080
FUZZTIME ?= 30s

.PHONY: help
help: ## Describe the targets
	@echo "Usage: make TARGET"
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z_-]+:.*?## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Build and run the demo upstream and the bridge (examples/demo.yaml); Ctrl-C stops both
	go build -o .tmp/demo-upstream ./cmd/demo-upstream
	go build -o .tmp/bridge ./cmd/bridge
	trap 'kill 0' EXIT; \
	.tmp/demo-upstream --addr $(DEMO_ADDRESS) --token demo-token & \
	.tmp/bridge serve --config examples/demo.yaml

.PHONY: test
test: peers browser python-grpc ## Run every test with the race detector (installs the Node test peers, chromium and Python's grpcio first)
	go test -race -count=1 ./...
	cd deploy/validate && go test -count=1 ./...

STRESS_COUNT ?= 3

.PHONY: stress
stress: peers browser python-grpc ## Hunt flakes: every test STRESS_COUNT times (default 3), shuffled, beside a busy-loop CPU hog
	( while :; do :; done ) & hog=$$!; trap 'kill $$hog' EXIT; \
		go test -race -count=$(STRESS_COUNT) -shuffle=on ./...

.PHONY: browser
browser: ## Install Debian chromium (headless browser for the admin status page test) if missing
	command -v chromium || (apt-get update && apt-get install -y --no-install-recommends chromium)

.PHONY: python-grpc
python-grpc: ## Install Debian python3-grpcio and python3-protobuf (the Python example client's test) if missing
	/usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null || (apt-get update && apt-get install -y --no-install-recommends python3-grpcio python3-protobuf)

.PHONY: deploy-check
deploy-check: ## Validate Dockerfile and deploy/kubernetes (strict decode, invariants, static build)
	cd deploy/validate && go test -count=1 -v ./...

.PHONY: peers
peers: testpeers/node/node_modules/.package-lock.json ## Install the Node test peers from the committed lock file

testpeers/node/node_modules/.package-lock.json: testpeers/node/package-lock.json testpeers/node/package.json
	cd testpeers/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

BENCH_ARGS ?=

.PHONY: bench
bench: ## Run every benchmark scenario side by side (bench/, docs/design.md §13); BENCH_ARGS="-scenarios 1,2" to pick
	go build -o .tmp/bridge ./cmd/bridge
	cd bench/node && npm ci --no-audit --no-fund --loglevel=error
	cd bench && go run ./cmd/bench -bridge ../.tmp/bridge -node node -out results.json $(BENCH_ARGS)

.PHONY: fuzz
fuzz: ## Fuzz the WebSocket frame reader, the wire decoder, a whole session against any upstream, request decoding and validation, batch encoding, the cursor pointer, FUZZTIME each (default 30s)
	go test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime $(FUZZTIME) ./session/internal/wsconn/
	go test -run '^$$' -fuzz '^FuzzDecodeEnvelope$$' -fuzztime $(FUZZTIME) ./session/
	go test -run '^$$' -fuzz '^FuzzConnUpstream$$' -fuzztime $(FUZZTIME) ./session/
	go test -run '^$$' -fuzz '^FuzzValidate$$' -fuzztime $(FUZZTIME) ./bridge/
	go test -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) ./bridge/
	go test -run '^$$' -fuzz '^FuzzMarshalBatch$$' -fuzztime $(FUZZTIME) ./bridge/
	go test -run '^$$' -fuzz '^FuzzPointerFind$$' -fuzztime $(FUZZTIME) ./session/

DURATION ?= 10m

.PHONY: soak
soak: ## Soak the bridge in one process (upstream restarts, token expiry, churn, slow readers) for DURATION (default 10m)
	go run ./cmd/soak -duration $(DURATION)

# The gqlgen output of the demo upstream (gqlgen pinned by go.mod; the
# //go:generate line in internal/demoupstream/doc.go).
GQLGEN_OUT := internal/demoupstream/graph/generated.go internal/demoupstream/graph/models_gen.go

.PHONY: generate
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Regenerate gen/ from proto/ and the demo upstream's gqlgen code, and tidy go.mod
	rm -rf gen
	buf generate
	go generate ./internal/demoupstream/
	go mod tidy

.PHONY: checkgenerate
checkgenerate: generate ## Fail when generated code or go.mod are not what generate makes
	@if [ -n "$$(git status --porcelain -- gen $(GQLGEN_OUT) go.mod go.sum)" ]; then \
		git status --porcelain -- gen $(GQLGEN_OUT) go.mod go.sum; echo "generated code is stale: run make generate and commit"; exit 1; fi

.PHONY: lint
lint: $(BIN)/buf $(BIN)/staticcheck ## Vet, staticcheck, gofmt, buf lint and buf format
	go vet ./...
	staticcheck ./...
	@unformatted="$$(git ls-files '*.go' | grep -v '^gen/' | xargs gofmt -l)"; \
		if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	buf lint
	buf format -d --exit-code

$(BIN)/buf:
	GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

$(BIN)/staticcheck:
	GOBIN=$(BIN) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: clean
clean: ## Remove built binaries and installed tools
	rm -rf .tmp testpeers/node/node_modules
