# Tools are pinned and installed into .bin/, so the SDK's users never
# inherit them: buf's release binary from npm (tools/buf/package-lock.json
# pins the version and each package's sha512), the Go code generators and
# h2spec, the HTTP/2 conformance checker test/h2spec_test.go runs against
# the agent's API port, from tools/go.mod.
BIN := $(CURDIR)/.bin
BUF_VERSION := $(shell sed -n 's|.*"@bufbuild/buf": "\(.*\)".*|\1|p' tools/buf/package.json)
GENERATORS := $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
TOOLS := $(BIN)/buf $(GENERATORS)
export PATH := $(BIN):$(PATH)

.PHONY: proto lint-proto check-proto tools test fuzz run bench

tools: $(TOOLS) $(BIN)/h2spec

$(GENERATORS) &: tools/go.mod tools/go.sum
	cd tools && GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

$(BIN)/h2spec: tools/go.mod tools/go.sum
	cd tools && GOBIN=$(BIN) go install github.com/summerwind/h2spec/cmd/h2spec

# buf: the release binary from the npm registry, in seconds; without npm,
# the same version built from source, in minutes. It is made in a temporary
# directory and renamed into place, so a buf already running is undisturbed.
$(BIN)/buf: tools/buf/package.json tools/buf/package-lock.json
	mkdir -p $(BIN)
	tmp=$$(mktemp -d $(BIN)/buf-install.XXXXXX) && trap 'rm -rf "$$tmp"' EXIT && \
	if command -v npm >/dev/null; then \
		cp tools/buf/package.json tools/buf/package-lock.json "$$tmp"/ && \
		(cd "$$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) && \
		cp "$$tmp"/node_modules/@bufbuild/buf-*/bin/buf "$$tmp"/buf; \
	else \
		echo "npm not found: building buf $(BUF_VERSION) from source, which takes minutes (with npm, make tools fetches the release binary)" >&2 && \
		GOBIN="$$tmp" go install github.com/bufbuild/buf/cmd/buf@v$(BUF_VERSION); \
	fi && \
	v=$$("$$tmp"/buf --version) && \
	{ test "$$v" = "$(BUF_VERSION)" || { echo "buf says it is $$v, tools/buf/package.json pins $(BUF_VERSION): run 'npm install --package-lock-only' in tools/buf" >&2; exit 1; }; } && \
	mv -f "$$tmp"/buf $@

proto: $(TOOLS)
	buf generate

lint-proto: $(TOOLS)
	buf lint

# check-proto fails when the committed generated code differs from what the
# pinned generators write.
check-proto: proto
	git diff --exit-code -- '*.pb.go' || (echo "generated code is stale: run 'make proto' and commit" >&2; exit 1)
	test -z "$$(git ls-files --others --exclude-standard -- '*.pb.go')" || (echo "untracked generated code: run 'make proto' and commit" >&2; exit 1)

# run: the quick start. Builds plughost and the example plugins, bundles
# them into a dev agent's bundles folder and starts a single-node agent.
# Like other dev agents it starts from an empty data dir each time: the
# plugins just rebuilt would otherwise be refused as new builds of
# versions already registered.
DEV := $(CURDIR)/.dev
run:
	rm -rf $(DEV)/data
	go build -trimpath -o $(DEV)/bin/plughost ./cmd/plughost
	go build -trimpath -ldflags "-X main.version=1.0.0" -o $(DEV)/exe/echo ./plugins/echo
	go build -trimpath -ldflags "-X main.version=1.0.0" -o $(DEV)/exe/counter ./plugins/counter
	mkdir -p $(DEV)/data/bundles
	$(DEV)/bin/plughost bundle build -o $(DEV)/data/bundles $(DEV)/exe/echo
	$(DEV)/bin/plughost bundle build -strategy restart -o $(DEV)/data/bundles $(DEV)/exe/counter
	$(DEV)/bin/plughost agent -dev -node dev -data-dir $(DEV)/data

# test: every test, with the race detector. The end-to-end tests in test/
# build the real binaries themselves.
test:
	go test -race -count=1 -timeout 60m ./...

# fuzz: every fuzz target, each for FUZZTIME (go fuzzes one target of one
# package per run). Their seed corpora (f.Add and testdata/fuzz/) already
# run as ordinary tests in make test; this looks for new inputs. A failing
# input is written to the package's testdata/fuzz/<target>/: fix the code
# and commit the file, which then runs in make test for good. Minimizing
# each new input for 1s, not go's 60s, leaves the time to fuzzing. Run one
# target longer with, for example:
#   go test -run '^$$' -fuzz '^FuzzHeaderBlocks$$' -fuzztime 5m ./host/router
# FuzzValidVersion (host/bundle) is left to make test's seeds: a regular
# expression checked against semver.org's, it is not worth the CI time.
FUZZTIME ?= 10s
FUZZ_TARGETS := \
	./host/bundle:FuzzParseManifest \
	./host/bundle:FuzzCompileConstraint \
	./host/bundle:FuzzOpenTarball \
	./host/bundle:FuzzOpenDir \
	./host/router:FuzzHeaderBlocks \
	./store/fsm:FuzzCommand \
	./store/fsm:FuzzSnapshot \
	./store/local:FuzzRequest
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $${t#*:} ($${t%%:*}, $(FUZZTIME))"; \
		go test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s -parallel 1 $${t%%:*}; \
	done

# bench: the benchmarks behind the figures in the issues.
bench:
	go test -run '^$$' -bench . -benchtime 3s ./host/router/ ./store/ ./test/
