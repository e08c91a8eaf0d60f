#!/bin/sh
# Seeds fuzz/corpus/<target>/ from a freshly made repository: every stored file decoded to the
# input form of each target (tests/parsers.rs, fuzz_seeds_from_a_real_repository).
set -eu
cd "$(dirname "$0")/.."
OCVAULT_FUZZ_SEEDS="$PWD/fuzz/corpus" cargo test --release --test parsers \
    fuzz_seeds_from_a_real_repository -- --nocapture
