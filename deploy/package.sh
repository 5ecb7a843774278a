#!/usr/bin/env bash
# Builds the Debian package: the binary (release profile unless PROFILE says otherwise), its
# shell completions and man page, then `cargo deb` (cargo install cargo-deb). The package lands
# in target/debian/. CI runs it with PROFILE=dev (fat LTO on two cores is slow) to check the
# package's contents; real packages use the release profile.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
case "$profile" in
  dev) dir=debug ;;
  *) dir=$profile ;;
esac
cargo build --locked --profile "$profile" --bin pollhook
bin="target/$dir/pollhook"
mkdir -p target/package/completions target/package/man
"$bin" completions bash > target/package/completions/pollhook
"$bin" completions zsh > target/package/completions/_pollhook
"$bin" completions fish > target/package/completions/pollhook.fish
"$bin" man | gzip -9n > target/package/man/pollhook.1.gz
cargo deb --no-build --profile "$profile" "$@"
