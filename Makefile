# Micromesh. `make run` starts the server; `make test` runs the whole suite.
# Every tool the build needs is built from tools/go.mod into bin/, once.

GO       ?= go
BIN      := $(CURDIR)/bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/micromesh/micromesh/internal/version.Version=$(VERSION)
# grpcnotrace drops gRPC's x/net/trace pages (unused here): their
# html/template keeps every exported method of every linked type alive,
# 40% of the sidecar's binary.
GOTAGS   := grpcnotrace
TOOLS    := tools/go.mod tools/go.sum
GOFILES   = $(shell git ls-files --cached --others --exclude-standard '*.go')

.PHONY: build run test test-go lint proto proto-check bench bench-dataplane deps nginx postgres tools clean

# The protoc plugins go beside meshctl: `meshctl new` and `meshctl generate`
# run them (codegen.FindPlugins).
build: bin/protoc-gen-go bin/protoc-gen-go-grpc ## bin/meshctl and bin/mesh-sidecar (the sidecar alone, which the runtime injects)
	$(GO) build -tags '$(GOTAGS)' -ldflags '$(LDFLAGS)' -o bin/ ./cmd/meshctl ./cmd/mesh-sidecar

run: build ## start the server in the foreground with embedded defaults
	bin/meshctl server

test: lint proto-check test-go ## the whole suite: lint, generated code, tests with -race

test-go: deps postgres bin/consul bin/protoc-gen-go bin/protoc-gen-go-grpc bin/jsdom/node_modules/jsdom/package.json
	MESH_JSDOM=$(BIN)/jsdom/node_modules $(GO) test -race -count=1 -timeout 20m ./...

lint: bin/staticcheck ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	bin/staticcheck ./...

proto: bin/buf bin/protoc-gen-go bin/protoc-gen-go-grpc ## regenerate Go from proto/ and examples/*/proto
	bin/buf lint
	bin/buf generate proto
	bin/buf generate examples --template buf.gen.examples.yaml

# Generates into a scratch directory and compares every .pb.go, both ways.
proto-check: bin/buf bin/protoc-gen-go bin/protoc-gen-go-grpc ## fail if `make proto` would change the checked-in code
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	bin/buf lint && bin/buf generate proto -o $$tmp && \
	bin/buf generate examples --template buf.gen.examples.yaml -o $$tmp && \
	stale=0; \
	for f in $$(cd $$tmp && find . -name '*.pb.go') $$(find proto examples -name '*.pb.go' -printf './%p\n'); do \
		cmp -s $$tmp/$$f $$f || { echo "stale: $$f"; stale=1; }; done; \
	if [ $$stale = 1 ]; then echo "generated code is stale: run 'make proto' and commit the result"; exit 1; fi

bench: ## benchmarks, each with its same-run baseline (the convergence runs take minutes)
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1 ./identity/... ./xds/
	$(GO) test -run '^$$' -bench Convergence -benchtime 20x -timeout 60m ./controlplane/
	$(GO) test -run '^$$' -bench FrameworkCall -benchtime 3s ./service/
	$(GO) test -run '^$$' -bench Platform -benchtime 1x ./platform/
	$(GO) test -run '^$$' -bench GatewayCall -benchtime 3s -count 3 ./platform/gateway/
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./dataplane/...
	$(MAKE) bench-dataplane

# The data plane against a direct connection and an nginx mTLS pair, all in
# one run (internal/benchmesh). About 3 minutes with the defaults;
# BENCHFLAGS='-rounds 1 -t 3s' for a quick look.
bench-dataplane: build bin/fortio nginx
	$(GO) run ./internal/benchmesh $(BENCHFLAGS)

# Programs the tests run that are not Go modules.
deps:
	@command -v openssl >/dev/null || { echo "installing openssl"; apt-get install -y openssl >/dev/null || { apt-get update >/dev/null && apt-get install -y openssl >/dev/null; }; }

# PostgreSQL for the store's integration tests (internal/pgtest starts its
# own server from these binaries; the package's own cluster is not used).
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { echo "installing postgresql"; (apt-get install -y postgresql >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y postgresql >/dev/null; }); }

# nginx, the baseline of bench-dataplane, from Debian; the package starts a
# system nginx on port 80, which the benchmark does not need.
nginx:
	@command -v nginx >/dev/null || { echo "installing nginx"; (apt-get install -y nginx >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nginx >/dev/null; }) ; pkill -x nginx || true; }

tools: bin/buf bin/protoc-gen-go bin/protoc-gen-go-grpc bin/staticcheck bin/consul

# A real Consul for the registry's tests: 1.15.4, the last MPL-2.0 release,
# built from its own module (tools/consul) so none of its dependencies
# touch ours. About 2.5 minutes on 2 cores the first time.
bin/consul: tools/consul/go.mod tools/consul/go.sum
	cd tools/consul && $(GO) build -o $(BIN)/consul github.com/hashicorp/consul

# fortio, the load generator and echo server of bench-dataplane: v1.67.1,
# the newest whose dependencies the module proxy here serves.
bin/fortio: tools/fortio/go.mod tools/fortio/go.sum
	cd tools/fortio && $(GO) build -o $(BIN)/fortio fortio.org/fortio

# jsdom, a DOM for the dashboard's browser test (platform/dashboard), from
# the npm registry with the machine's Node.js, at the versions
# tools/jsdom/package-lock.json pins.
bin/jsdom/node_modules/jsdom/package.json: tools/jsdom/package.json tools/jsdom/package-lock.json
	@command -v npm >/dev/null || { echo "installing nodejs and npm"; (apt-get install -y nodejs npm >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nodejs npm >/dev/null; }); }
	rm -rf bin/jsdom && mkdir -p bin/jsdom && cp tools/jsdom/package.json tools/jsdom/package-lock.json bin/jsdom/
	cd bin/jsdom && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

bin/buf: $(TOOLS)
	cd tools && $(GO) build -o $(BIN)/buf github.com/bufbuild/buf/cmd/buf
bin/protoc-gen-go: $(TOOLS)
	cd tools && $(GO) build -o $(BIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
bin/protoc-gen-go-grpc: $(TOOLS)
	cd tools && $(GO) build -o $(BIN)/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
bin/staticcheck: $(TOOLS)
	cd tools && $(GO) build -o $(BIN)/staticcheck honnef.co/go/tools/cmd/staticcheck

clean:
	rm -rf bin
