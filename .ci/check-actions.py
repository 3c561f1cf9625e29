"""Checks that workflow templates, as users copy them, use only actions that exist.

GitHub downloads every action a job uses when the job is set up, skipped steps included, so one
unresolvable `uses:` (a placeholder owner, an all-zero commit) fails every run of the workflow.
Every `uses:` must name an action listed in .ci/known-actions.txt, pinned to the listed full
commit SHA, with the listed tag as its `# tag` comment. Local (`./...`) and `docker://` actions are
refused: a template is copied into other repositories. Placeholders (`OWNER/`, an all-zero SHA)
are refused anywhere in the file, comments included.

Prints every problem as `file:line: message`; exits 1 when there is any, 2 on bad input.
Usage: python .ci/check-actions.py WORKFLOW_OR_ACTION.yml...
"""

import re
import sys
from pathlib import Path

from ruamel.yaml import YAML

KNOWN = Path(__file__).with_name("known-actions.txt")
PINNED = re.compile(r"^(?P<action>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(?:/[^@\s]+)?)@(?P<sha>[0-9a-f]{40})$")
KNOWN_LINE = re.compile(r"^(?P<action>\S+)@(?P<sha>[0-9a-f]{40})\s+#\s+(?P<tag>\S+)$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)\s*(?:#\s*(?P<tag>\S+))?")
PLACEHOLDERS = [
    (re.compile(r"\bOWNER/"), "placeholder owner `OWNER/`"),
    (re.compile(r"\b0{40}\b"), "all-zero commit SHA (a placeholder)"),
]


def known_actions():
    """{(action, sha): tag} from known-actions.txt."""
    known = {}
    for n, line in enumerate(KNOWN.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = KNOWN_LINE.match(line)
        if not m:
            raise ValueError(f"{KNOWN}:{n}: not `owner/repo@<40-hex sha> # tag`: {line}")
        known[(m["action"], m["sha"])] = m["tag"]
    return known


def uses_values(doc):
    """Every `uses:` value of a workflow (steps and reusable-workflow jobs) or composite action."""
    found = []
    for job in (doc.get("jobs") or {}).values():
        if isinstance(job, dict):
            if "uses" in job:
                found.append(job["uses"])
            found += [s["uses"] for s in job.get("steps") or [] if isinstance(s, dict) and "uses" in s]
    runs = doc.get("runs") or {}
    if isinstance(runs, dict):
        found += [s["uses"] for s in runs.get("steps") or [] if isinstance(s, dict) and "uses" in s]
    return found


def check(path, known):
    text = Path(path).read_text(encoding="utf-8")
    doc = YAML(typ="safe").load(text)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    problems = []
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        for pattern, what in PLACEHOLDERS:
            if pattern.search(line):
                problems.append(f"{path}:{n}: {what}: {line.strip()}")
    # The parsed values are authoritative (no `uses:` hides in a flow mapping or a folded
    # scalar); the raw lines give each one its line number and `# tag` comment.
    comments = {}
    for n, line in enumerate(lines, 1):
        m = USES_LINE.match(line)
        if m:
            comments.setdefault(m["ref"].strip("'\""), []).append((n, m["tag"]))
    for ref in uses_values(doc):
        where = comments.get(ref, [(0, None)])
        n = where[0][0]
        if not isinstance(ref, str):
            problems.append(f"{path}:{n}: uses: is not a string: {ref!r}")
            continue
        if ref.startswith("./") or ref.startswith("docker://"):
            problems.append(f"{path}:{n}: {ref}: local and docker actions do not travel with a copied template")
            continue
        m = PINNED.match(ref)
        if not m:
            problems.append(f"{path}:{n}: {ref}: not pinned to a full 40-hex commit SHA")
            continue
        tag = known.get((m["action"], m["sha"]))
        if tag is None:
            problems.append(f"{path}:{n}: {ref}: not in .ci/known-actions.txt (verify it, then add it there)")
            continue
        for line_no, comment in where:
            if comment != tag:
                problems.append(f"{path}:{line_no}: {ref}: the comment should be `# {tag}`, found `# {comment}`")
    return len(uses_values(doc)), problems


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        known = known_actions()
        total, problems = 0, []
        for path in sys.argv[1:]:
            n, p = check(path, known)
            total += n
            problems += p
    except (OSError, ValueError) as e:
        print(f"check-actions: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    print(f"check-actions: {len(sys.argv) - 1} file(s), {total} uses, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
