#!/usr/bin/env bash
# CI's check of the Debian package: builds it with a quick profile, checks its contents and
# control data, then (as root, where dpkg can install) installs it, checks the service is
# neither enabled nor started, removes it (config kept) and purges it (config gone).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-package-check} deploy/package.sh --output target/debian/pollhook-check.deb >/dev/null
deb=target/debian/pollhook-check.deb
contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/pollhook ./etc/pollhook/bridge.yaml ./usr/lib/systemd/system/pollhook.service \
    ./usr/share/man/man1/pollhook.1.gz ./usr/share/bash-completion/completions/pollhook \
    ./usr/share/zsh/vendor-completions/_pollhook ./usr/share/fish/vendor_completions.d/pollhook.fish \
    ./usr/share/doc/pollhook/README.md ./usr/share/doc/pollhook/configuration.md; do
  grep -q " $path\$" <<<"$contents" || { echo "package lacks $path"; exit 1; }
done
grep -q -- "-rw-r--r-- .* ./etc/pollhook/bridge.yaml$" <<<"$contents" || { echo "bridge.yaml is not 0644"; exit 1; }
[ "$(dpkg-deb -f "$deb" Package)" = pollhook ] || { echo "wrong package name"; exit 1; }
dpkg-deb -I "$deb" conffiles | grep -qx /etc/pollhook/bridge.yaml || { echo "bridge.yaml is not a conffile"; exit 1; }
echo "package contents: ok ($(grep -c '^-' <<<"$contents") files)"
if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null; then
  echo "not root: install check skipped"
  exit 0
fi
dpkg -i "$deb" >/dev/null
pollhook --version
pollhook completions bash | bash -n
pollhook man | groff -man -Tutf8 -ww -z
[ ! -e /etc/systemd/system/multi-user.target.wants/pollhook.service ] || { echo "the service was enabled on install"; exit 1; }
echo "# an operator's edit" >> /etc/pollhook/bridge.yaml
dpkg -r pollhook >/dev/null
grep -q "an operator's edit" /etc/pollhook/bridge.yaml || { echo "remove lost the config"; exit 1; }
[ ! -e /usr/bin/pollhook ] || { echo "remove kept the binary"; exit 1; }
dpkg -P pollhook >/dev/null
[ ! -e /etc/pollhook ] || { echo "purge kept /etc/pollhook"; exit 1; }
echo "package install, remove, purge: ok"
