# Entry points. A newcomer needs two: `make up` (the operator on a local cluster) and
# `make test` (everything CI runs). `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# cargo's target dir lives outside the clone so CI and fresh clones reuse the build cache.
export CARGO_TARGET_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/db-operator/target

.PHONY: help up down test lint unit bench crd

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

up: ## Build (once, cached) and start the local control plane with the operator on it.
	deploy/local/up

down: ## Stop the local control plane (deploy/local/down --purge also deletes its state).
	deploy/local/down

test: lint ## Lint, then unit and integration tests against the local control plane (CI runs this).
	deploy/local/test-env -- cargo test --workspace --locked

lint: ## rustfmt and clippy, warnings are errors.
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit: ## Unit tests only (no cluster needed).
	cargo test --workspace --locked --lib --bins

bench: ## Admission server throughput and latency benchmark (release build).
	cargo bench -p admission

crd: ## Regenerate deploy/crd/database.yaml from the Rust types.
	cargo run -q -p api --bin crdgen > deploy/crd/database.yaml
