"""The command line shell: commands listed, schemas printable, WordNet readable by nltk after make install."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from curate.cli import cli


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "curate", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("sample", "serve", "download", "schema"):
        assert f"  {command}" in out


def test_schema_command_prints_documented_columns():
    result = CliRunner().invoke(cli, ["schema", "rejects"])
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert [c["name"] for c in doc["columns"]][:3] == ["key", "input_row", "url"]
    bad = CliRunner().invoke(cli, ["schema", "nope"])
    assert bad.exit_code == 2 and "no schema named" in bad.output


def test_wordnet_corpus_is_installed_for_nltk():
    from nltk.corpus import wordnet as wn

    lemmas = {lemma.name() for s in wn.synsets("photo") for lemma in s.lemmas()}
    assert {"photograph", "picture"} <= lemmas
    assert wn.synset("dog.n.01").lexname() == "noun.animal"  # the lexnames file curate writes is in order
