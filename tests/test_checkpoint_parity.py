"""One format, one set of rules: genesis.load (Python) and the C++ API's reader judge every
file the same way. Both run over the shared corpus (tests/data/checkpoint_corpus, written by
tests/data/make_checkpoint_corpus.py; ctest runs the C++ reader over the same files) and over
the same seeded mutations of valid checkpoints.

The C++ reader is reached through genesis._C._cpp_checkpoint_verdict, which runs
checkpoint::decode on a byte string. Readers of hostile bytes could crash, so every case runs
in a child interpreter that reports one JSON line per case: a crash names the last case."""

import importlib.util
import io
import json
import pathlib
import random
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "data" / "checkpoint_corpus"
_spec = importlib.util.spec_from_file_location("make_checkpoint_corpus", HERE / "data" / "make_checkpoint_corpus.py")
make_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_corpus)


def verdicts(blob):
    """(Python's verdict, C++'s verdict) on a file: "ok" or "invalid" for Python; "ok",
    "unsupported" (valid, but holds what C++ does not represent) or "invalid" for C++."""
    import genesis

    try:
        genesis.load(io.BytesIO(blob))
        python = "ok"
    except genesis.CheckpointError:
        python = "invalid"
    return python, genesis._C._cpp_checkpoint_verdict(blob)[0]


def agree(python, cpp):
    return (python == "ok") == (cpp in ("ok", "unsupported"))


def run_cases(mode, *args):
    """Run this module's child entry point; return its JSON lines, failing clearly on a crash."""
    result = subprocess.run(
        [sys.executable, __file__, mode, *map(str, args)], capture_output=True, text=True, timeout=600
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0, (
        f"the child crashed (exit {result.returncode}) after case {lines[-1]['case'] if lines else None}:\n"
        + result.stderr[-3000:]
    )
    return lines


# --------------------------------------------------------------------------------- corpus


def test_the_committed_corpus_is_what_the_generator_makes():
    expected = make_corpus.corpus()
    committed = {str(p.relative_to(CORPUS)): p.read_bytes() for p in CORPUS.glob("*/*.genesis")}
    assert sorted(committed) == sorted(expected)
    stale = [name for name in expected if committed[name] != expected[name]]
    assert not stale, f"regenerate with python tests/data/make_checkpoint_corpus.py: {stale}"


@pytest.fixture(scope="module")
def corpus_verdicts():
    return {line["case"]: (line["python"], line["cpp"]) for line in run_cases("corpus")}


@pytest.mark.parametrize("name", sorted(str(p.relative_to(CORPUS)) for p in CORPUS.glob("invalid/*.genesis")))
def test_both_readers_reject_every_invalid_file(corpus_verdicts, name):
    assert corpus_verdicts[name] == ("invalid", "invalid")


@pytest.mark.parametrize("name", sorted(str(p.relative_to(CORPUS)) for p in CORPUS.glob("valid/*.genesis")))
def test_both_readers_accept_every_valid_file(corpus_verdicts, name):
    python, cpp = corpus_verdicts[name]
    assert python == "ok" and cpp in ("ok", "unsupported")


# ----------------------------------------------------------------------------------- fuzz

# Bytes and tokens that reach the header validators: JSON syntax, numbers the counts must
# refuse, escapes, and bytes that are not UTF-8.
TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"-",
    b"0",
    b"1",
    b"9",
    b".",
    b"e",
    b"+",
    b" ",
    b"-0",
    b"01",
    b"1e2",
    b"null",
    b"true",
    b"NaN",
    b"\\u00e9",
    b"\\ud800",
    b"\\udc00",
    b"\\u0041",
    b"\xff",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b'"0x1"',
    b'"0x01"',
    b'"-0x0"',
    b'{"int":"0x1"}',
    b'{"float":"3ff0000000000000"}',
    b"true",
    b'"cpu"',
    b'"cuda:01"',
    b'"complex64"',
    b'"complex128"',
    b'"x"',
    b"64",
    b"0,0",
]


def mutate_header(rng, header):
    """1-3 random edits of the header text."""
    text = bytearray(header)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(len(text) + 1)
        choice = rng.random()
        if choice < 0.4:  # replace a span by a token
            text[at : at + rng.randrange(0, 4)] = rng.choice(TOKENS)
        elif choice < 0.6:  # delete a span
            del text[at : at + rng.randrange(1, 6)]
        elif choice < 0.8:  # repeat a span (duplicate keys, entries, values)
            end = min(len(text), at + rng.randrange(1, 40))
            text[at:at] = text[at:end]
        else:
            text[at:at] = rng.choice(TOKENS)
    return bytes(text)


def mutate(rng, blob):
    header, rest = make_corpus.split(blob)
    choice = rng.random()
    if choice < 0.2:  # raw corruption: checksums and padding checks must catch it
        out = bytearray(blob)
        for _ in range(rng.randrange(1, 4)):
            out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
        return bytes(out)
    if choice < 0.35 and rest:  # a data or padding byte changed, with the checksums recomputed
        out = bytearray(blob)
        at = len(blob) - len(rest) + rng.randrange(len(rest))
        out[at] = rng.choice([0, 1, 2, 255])
        try:
            return make_corpus.recheck(bytes(out))
        except (ValueError, KeyError, TypeError):
            return bytes(out)
    mutated = mutate_header(rng, header)  # a crafted header with a correct checksum
    # Keep the file's size consistent with the header when the edit did not change the table.
    return make_corpus.build(mutated, rest, make_corpus.version_of(blob))


def fuzz_seeds():
    return [p.read_bytes() for p in sorted(CORPUS.glob("valid/*.genesis"))]


def test_both_readers_agree_on_seeded_mutations():
    lines = run_cases("fuzz", 20261201, 3000)
    assert len(lines) == 3000
    disagreements = [line for line in lines if not agree(line["python"], line["cpp"])]
    assert not disagreements, disagreements[:5]
    # The mutations must reach past the checksums: some load, and many fail on their header.
    assert sum(line["python"] == "ok" for line in lines) > 100


# ------------------------------------------------------------------------- child process


def _child(mode, *args):
    if mode == "corpus":
        cases = [(str(p.relative_to(CORPUS)), p.read_bytes()) for p in sorted(CORPUS.glob("*/*.genesis"))]
    else:
        seed, count = map(int, args)
        rng = random.Random(seed)
        seeds = fuzz_seeds()
        cases = ((i, mutate(rng, rng.choice(seeds))) for i in range(count))
    for case, blob in cases:
        python, cpp = verdicts(blob)
        line = {"case": case, "python": python, "cpp": cpp}
        if not agree(python, cpp):
            line["file"] = blob.hex()
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    _child(*sys.argv[1:])
