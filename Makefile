# Tools are pinned in tools/go.mod and built into .bin/, so the SDK's users
# never inherit them.
BIN := $(CURDIR)/.bin
TOOLS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
export PATH := $(BIN):$(PATH)

.PHONY: proto lint-proto check-proto tools test run

tools: $(TOOLS)

$(TOOLS): tools/go.mod tools/go.sum
	cd tools && GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

proto: $(TOOLS)
	buf generate

lint-proto: $(TOOLS)
	buf lint

# check-proto fails when the committed generated code differs from what the
# pinned generators write.
check-proto: proto
	git diff --exit-code -- '*.pb.go' || (echo "generated code is stale: run 'make proto' and commit" >&2; exit 1)
	test -z "$$(git ls-files --others --exclude-standard -- '*.pb.go')" || (echo "untracked generated code: run 'make proto' and commit" >&2; exit 1)
