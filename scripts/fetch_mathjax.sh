#!/usr/bin/env bash
# Put a local copy of MathJax 3 under book/_static/mathjax so that the website typesets math offline.
# Fetched once at setup from the npm registry (never at page-view time). Only what the site uses is
# kept (~3 MB of the 24 MB package): tex-chtml.js (the one component the pages load), the TeX
# extensions it autoloads on demand (input/tex/extensions), the CHTML web fonts, and the menu and
# accessibility modules it loads when a reader opens the math menu. The speech-rule engine (sre,
# 4 MB) is left out. A copy made by an older version of this script (the whole package) is trimmed.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=book/_static/mathjax
marker="$dest/.trimmed-3.2.2"
KEEP=(tex-chtml.js input/tex/extensions output/chtml/fonts/woff-v2 ui a11y)
[ -f "$dest/tex-chtml.js" ] && [ -f "$marker" ] && exit 0
tmp=$(mktemp -d)
if [ -f "$dest/tex-chtml.js" ]; then
  mv "$dest" "$tmp/package-es5"                # an untrimmed copy: keep what is used
  src="$tmp/package-es5"
else
  (cd "$tmp" && npm pack --silent mathjax@3.2.2 >/dev/null && tar xzf mathjax-3.2.2.tgz)
  src="$tmp/package/es5"
fi
mkdir -p "$dest"
for path in "${KEEP[@]}"; do
  mkdir -p "$dest/$(dirname "$path")"
  cp -r "$src/$path" "$dest/$path"
done
touch "$marker"
rm -rf "$tmp"
echo "MathJax 3.2.2 (tex-chtml, $(du -sh "$dest" | cut -f1)) copied to $dest"
