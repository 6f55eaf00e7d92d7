#!/usr/bin/env bash
# WordNet 3.0 for nltk, offline: Debian's wordnet-base + wordnet-sense-index laid out as an nltk corpus
# (offline.md). Where the internet exists, nltk.download('wordnet') gives the same corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.data/nltk_data/corpora/wordnet
if [ -f "$dest/lexnames" ] && [ -f "$dest/index.sense" ]; then
  exit 0
fi
if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install: Debian wordnet-base wordnet-sense-index"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null
  else
    echo "install: WordNet missing: run as root 'apt-get install wordnet-base wordnet-sense-index'," \
         "or python -c \"import nltk; nltk.download('wordnet', download_dir='.data/nltk_data')\"" >&2
    exit 1
  fi
fi
.venv/bin/python -m curate.captions.wordnet_setup /usr/share/wordnet "$dest"
