#!/usr/bin/env bash
# Put a local copy of MathJax 3 under book/_static/mathjax so that the website typesets math offline.
# Fetched once at setup from the npm registry (never at page-view time).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=book/_static/mathjax
[ -f "$dest/tex-chtml.js" ] && exit 0
tmp=$(mktemp -d)
(cd "$tmp" && npm pack --silent mathjax@3.2.2 >/dev/null && tar xzf mathjax-3.2.2.tgz)
mkdir -p "$dest"
cp -r "$tmp/package/es5/." "$dest/"
rm -rf "$tmp"
echo "MathJax 3.2.2 copied to $dest"
