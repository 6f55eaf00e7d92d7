"""Lay Debian's WordNet 3.0 files out as the nltk `wordnet` corpus (`python -m curate.captions.wordnet_setup SRC DEST`).

nltk 3.10 refuses symlinks that leave the corpus root, so the files are copied; Debian does not ship the
`lexnames` file nltk needs, so it is written from the WordNet 3.0 list of lexicographer files.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

FILES = [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("adj", "adv", "noun", "verb")]
FILES += [f"{pos}.exc" for pos in ("adj", "adv", "noun", "verb")] + ["index.sense", "cntlist.rev"]

LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity "
    "noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition "
    "verb.communication verb.competition verb.consumption verb.contact verb.creation verb.emotion "
    "verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
POS = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{POS[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def install(src: Path, dest: Path) -> None:
    missing = [f for f in FILES if not (src / f).is_file()]
    if missing:
        raise SystemExit(f"{src}: missing WordNet file(s) {', '.join(missing)}")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in FILES:
        shutil.copyfile(src / f, tmp / f)
    (tmp / "lexnames").write_text(lexnames_text(), encoding="ascii")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m curate.captions.wordnet_setup SRC_DIR DEST_DIR")
    install(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"install: WordNet corpus ready in {sys.argv[2]} (set NLTK_DATA={Path(sys.argv[2]).parents[1]})")
