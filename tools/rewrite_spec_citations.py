"""Point the code's "SPEC section N" citations at the docs/ pages that now hold the contract.

The contract the code comments cite used to live outside the repository; its sections are now
genesis's own documentation. Run once, from the repository root, after the pending branches
are merged:

    python tools/rewrite_spec_citations.py            # rewrite tracked files in place
    python tools/rewrite_spec_citations.py --check    # list citations left; exit 1 if any

Forms handled: "SPEC section 4", "SPEC sections 2 and 3", "SPEC sections 2, 4 and 8",
"SPEC 4", "SPEC §4", "SPEC sec. 4". Anything else that mentions SPEC is listed for a person to
fix by hand.
"""

import argparse
import pathlib
import re
import subprocess
import sys

# Section of the old contract -> where genesis's documentation states it now.
SECTIONS = {
    1: "docs/semantics.md#package-surface",
    2: "docs/semantics.md#parameters",
    3: "docs/semantics.md#the-optimizer-interface",
    4: "docs/semantics.md#update-rules",
    5: "docs/semantics.md#gradient-clipping",
    6: "docs/semantics.md#learning-rate-schedulers",
    7: "docs/semantics.md#checkpoints",
    8: "docs/mixed-precision.md",
    9: "docs/cpp.md",
    10: "docs/performance.md",
}

NUMBERS = r"\d+(?:\s*(?:,|and|&)\s*\d+)*"
CITATION = re.compile(r"\bSPEC(?:\.md)?\s+(?:sections?\s+|sec\.\s*|§\s*)?(" + NUMBERS + r")\b")
ANY_MENTION = re.compile(r"\bSPEC\b")
SKIP = {"tools/rewrite_spec_citations.py"}
LINE_LIMIT = 100  # ruff's and clang-format's column limit (pyproject.toml, .clang-format)


def replacement(match):
    numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
    unknown = [n for n in numbers if n not in SECTIONS]
    if unknown:
        return match.group(0)  # left for a person (reported by --check)
    targets = list(dict.fromkeys(SECTIONS[n] for n in numbers))
    return targets[0] if len(targets) == 1 else ", ".join(targets[:-1]) + " and " + targets[-1]


def tracked_files():
    out = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True)
    return [pathlib.Path(p) for p in out.stdout.splitlines() if p not in SKIP]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--check", action="store_true", help="change nothing; list remaining SPEC mentions and exit 1 if any"
    )
    args = ap.parse_args()
    changed, left, long = [], [], []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        if not ANY_MENTION.search(text):
            continue
        new = text if args.check else CITATION.sub(replacement, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
            old_lines = set(text.splitlines())
            long.extend(
                f"{path}:{n}"
                for n, line in enumerate(new.splitlines(), 1)
                if len(line) > LINE_LIMIT and line not in old_lines
            )
        for lineno, line in enumerate(new.splitlines(), 1):
            if ANY_MENTION.search(line):
                left.append(f"{path}:{lineno}: {line.strip()}")
    for path in changed:
        print(f"rewrote {path}")
    for where in long:
        print(f"rewrapping needed (over {LINE_LIMIT} columns now): {where}")
    for line in left:
        print(f"SPEC mention left: {line}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
