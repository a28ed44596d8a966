# ipa — see README.md. `make` lists the targets.
SHELL := /bin/bash
DEPS := $(CURDIR)/.deps
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
FUZZTIME ?= 30s

# Native paths for cgo and the tests: ONNX Runtime is loaded at run time,
# HiGHS is linked statically through pkg-config.
export IPA_ORT_LIB := $(DEPS)/lib/libonnxruntime.so.1
export IPA_RAW_DIR := $(DEPS)/raw
export IPA_MODELS_DIR := $(DEPS)/models
export IPA_PROMETHEUS := $(DEPS)/prometheus/usr/bin/prometheus
# The Kubernetes control plane the tests start (scripts/k8s-deps.sh builds it).
export IPA_K8S_BIN := $(DEPS)/k8s
export PKG_CONFIG_PATH := $(DEPS)/highs/lib/pkgconfig
export CGO_ENABLED := 1

GO ?= go
LDFLAGS := -X main.version=$(VERSION)

.PHONY: help deps k8s-deps models build test bench fuzz lint check golden demo docker clean distclean proto

help: ## list targets (default)
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## idempotent: ONNX Runtime, HiGHS, raw models into .deps/ (with progress)
	@bash scripts/deps.sh

bin/ipa: deps $(shell find . -name '*.go' -not -path './.deps/*') go.mod go.sum
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ipa .

build: bin/ipa ## deps + go build -o bin/ipa

models: bin/ipa ## build the model repository in .deps/models from the raw models (self-checked)
	./bin/ipa models build --raw $(IPA_RAW_DIR) --out $(IPA_MODELS_DIR)

k8s-deps: ## build once (cached in ~/.cache/k8s-test-bins; ~10 min cold): etcd, kube-apiserver, kcm, scheduler, kwok
	@bash scripts/k8s-deps.sh >/dev/null

# The end-to-end package runs alone, after the others: its timing tests
# (overload goodput, step loads, fidelity) measure a stage's capacity and
# then hold it to it, which another package's tests running on the same
# two cores would take away mid-test (CI failed that way once: goodput 76 %
# of a capacity measured a minute earlier).
test: models k8s-deps ## deps + go test -race -shuffle=on ./... (the e2e package last, alone), then the allocation budgets without -race (the README's test command; CI calls it)
	$(GO) test -race -shuffle=on -timeout 30m $$($(GO) list ./... | grep -v '/e2e$$')
	$(GO) test -race -shuffle=on -timeout 30m ./e2e
	$(GO) test -count=1 -run '^TestNoRace' $$(grep -rl --include='*_test.go' '^func TestNoRace' . | grep -v '^./.deps' | xargs -n1 dirname | sort -u)

bench: models ## benchmarks, baselines in the same run; then the served/raw ratios
	$(GO) test -run='^$$' -bench=. -benchmem ./...
	./bin/ipa bench

fuzz: ## each Fuzz* target for $(FUZZTIME)
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; done

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: deps ## gofmt -l, go vet, staticcheck (pinned; fetched through the module proxy)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

check: lint test ## lint + test + tidy check
	$(GO) mod tidy && git diff --exit-code go.mod go.sum

golden: ## regenerate golden files (then review the diff)
	$(GO) test ./... -update

demo: models ## build + ./bin/ipa (ipa local: the OCR pipeline on 127.0.0.1:8080)
	./bin/ipa --models.dir $(IPA_MODELS_DIR)

docker: ## multi-stage image (needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) -t ipa:$(VERSION) .

proto: ## regenerate runtime/onnxpb from onnx.proto (needs protoc)
	bash runtime/onnxpb/regen.sh

clean: ## remove bin/ and test caches
	rm -rf bin/
	$(GO) clean -testcache

distclean: clean ## also remove .deps/
	rm -rf .deps/
