"""Runs shellcheck on every `run:` script of the given workflow or composite action files.

Each script is checked as GitHub runs it with `shell: bash` (`bash -eo pipefail {0}`). Prints
findings with the file, job and step they come from; exits 1 when there is any, 2 on bad input.
Usage: python .ci/lint-shell.py SHELLCHECK FILE.yml...
"""

import subprocess
import sys
import tempfile

from ruamel.yaml import YAML


def scripts(path):
    """Yields (where, script) for every run: step in a workflow or a composite action."""
    doc = YAML(typ="safe").load(open(path, encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    groups = []
    for job_id, job in (doc.get("jobs") or {}).items():
        groups.append((f"job {job_id}", job.get("steps") or []))
    runs = doc.get("runs") or {}
    if runs.get("using") == "composite":
        groups.append(("composite", runs.get("steps") or []))
    for group, steps in groups:
        for i, step in enumerate(steps):
            if "run" in step:
                shell = step.get("shell", "bash")
                if shell != "bash":
                    raise ValueError(f"{path}: {group} step {i + 1} uses shell {shell!r}")
                yield f"{path}: {group}, step {i + 1} ({step.get('name', 'unnamed')})", step["run"]


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    shellcheck, files = sys.argv[1], sys.argv[2:]
    failed = checked = 0
    for path in files:
        for where, script in scripts(path):
            checked += 1
            with tempfile.NamedTemporaryFile("w", suffix=".sh") as f:
                f.write("#!/usr/bin/env bash\nset -eo pipefail\n" + script)
                f.flush()
                r = subprocess.run([shellcheck, "--format=gcc", f.name],
                                   capture_output=True, text=True)
            if r.returncode != 0:
                failed += 1
                print(f"{where}:")
                for line in (r.stdout + r.stderr).splitlines():
                    # Point at the script's own lines (two header lines were added).
                    parts = line.split(":", 3)
                    if len(parts) == 4 and parts[1].isdigit():
                        line = f"  line {int(parts[1]) - 2}:{parts[2]}:{parts[3]}"
                    print(line)
    print(f"shellcheck: {checked} run script(s), {failed} with findings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
