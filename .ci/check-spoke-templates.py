"""Checks that the two spoke templates stay in step, and that the inlined report sends what the
report action sends.

1. `spoke-with-callback.yml` is `spoke.yml` plus the two report steps at the end: the same
   name, run-name, inputs, concurrency, permissions and job settings, and the same steps before
   them (comments aside). Both report steps run `if: always()` and never fail the spoke
   (`continue-on-error: true`).
2. The report step's script, run with a stand-in `curl` that records the request, sends the same
   headers and byte for byte the same body as `action/report.sh` given the same inputs: with no
   summary, a short one, one that must be cut to the 64 KB limit, and no callback token.

Needs bash and jq (the hosted runners' tools). Prints each problem; exits 1 when there is any,
2 on bad input.
Usage: python .ci/check-spoke-templates.py SPOKE.yml SPOKE_WITH_CALLBACK.yml REPORT.sh
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ruamel.yaml import YAML

REPORT_STEPS = ("Mint a token for the hub repository only", "Report to the hub")

# Records the request instead of sending it: the --data-binary and --header files, and answers
# 204 through --write-out. Accepts the options report.sh and the template use.
FAKE_CURL = r"""#!/usr/bin/env bash
set -euo pipefail
out=
while (($#)); do
  case $1 in
    --data-binary) cp -- "${2#@}" "$FAKE_CURL_DIR/body.json"; shift 2 ;;
    --header) cp -- "${2#@}" "$FAKE_CURL_DIR/headers"; shift 2 ;;
    --output | --dump-header) : >"$2"; shift 2 ;;
    --write-out) out=204; shift 2 ;;
    --max-time | --request | --retry | --retry-max-time) shift 2 ;;
    --) echo "$2" >"$FAKE_CURL_DIR/url"; shift 2 ;;
    *) shift ;;
  esac
done
printf '%s' "$out"
"""

HUB_RUN_ID = "0b6f1c1e-6a8d-4c43-9d1e-2f3a4b5c6d7e"
RUNNER = {
    "GITHUB_REPOSITORY": "acme/svc-1",
    "GITHUB_RUN_ID": "123456789",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_API_URL": "https://api.github.com",
}


def load(path):
    doc = YAML(typ="safe").load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    return doc


def check_in_step(plain, callback):
    problems = []
    # `on` may be read as the key True by YAML 1.1 readers; compare whatever key it has.
    for key in sorted(set(plain) | set(callback), key=str):
        if key != "jobs" and plain.get(key) != callback.get(key):
            problems.append(f"top-level `{key}` differs between the two templates")
    pj, cj = plain.get("jobs") or {}, callback.get("jobs") or {}
    if list(pj) != list(cj):
        return problems + [f"jobs differ: {list(pj)} vs {list(cj)}"]
    for name in pj:
        p, c = dict(pj[name]), dict(cj[name])
        psteps, csteps = p.pop("steps", []), c.pop("steps", [])
        if p != c:
            problems.append(f"job `{name}`: settings other than steps differ")
        extra = [s for s in csteps if s.get("name") in REPORT_STEPS]
        if [s.get("name") for s in extra] != list(REPORT_STEPS) or csteps[-len(extra):] != extra:
            problems.append(f"job `{name}`: the callback template must end with the steps {REPORT_STEPS}")
            continue
        if csteps[: -len(extra)] != psteps:
            problems.append(f"job `{name}`: the steps before the report steps differ from spoke.yml")
        for s in extra:
            if not str(s.get("if", "")).startswith("always() &&"):
                problems.append(f"step `{s['name']}`: must run `if: always() && ...`")
            if s.get("continue-on-error") is not True:
                problems.append(f"step `{s['name']}`: must have `continue-on-error: true`")
    return problems


def report_script(callback):
    for job in callback["jobs"].values():
        for s in job.get("steps") or []:
            if s.get("name") == "Report to the hub":
                return s["run"]
    raise ValueError("no `Report to the hub` step")


def run(label, cmd, env, work):
    rec = Path(tempfile.mkdtemp(dir=work))
    full = {"PATH": f"{work}/bin:{os.environ['PATH']}", "FAKE_CURL_DIR": str(rec), **RUNNER, **env}
    r = subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{label} exited {r.returncode}: {r.stdout}{r.stderr}")
    return {f: (rec / f).read_bytes() if (rec / f).exists() else None for f in ("body.json", "headers", "url")}


def check_payload(callback, report_sh):
    script = report_script(callback)
    problems = []
    long_summary = ("## Übersicht ✓\n" + "line with ünïcödé and \"quotes\" and \\ and \t tab\n" * 2000)
    cases = [
        ("no summary file", None, "cb-token-1"),
        ("a short summary", "## hello\n\nall **good** ✓\n", "cb-token-2"),
        ("a summary over the 64 KB limit", long_summary, "cb-token-3"),
        ("no callback token", "ok\n", ""),
    ]
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "bin").mkdir()
        fake = Path(work) / "bin" / "curl"
        fake.write_text(FAKE_CURL)
        fake.chmod(0o755)
        for what, summary, cb in cases:
            temp = Path(tempfile.mkdtemp(dir=work))
            summary_file = temp / "spokehub-summary.md"
            if summary is not None:
                summary_file.write_text(summary, encoding="utf-8")
            common = {"HUB_RUN_ID": HUB_RUN_ID, "CALLBACK_TOKEN": cb, "TOKEN": "ghs_faketoken"}
            inline = run(
                "the report step",
                ["bash", "-eo", "pipefail", "-c", script],
                {**common, "HUB_REPO": "acme/hub", "STATUS": "success", "RUNNER_TEMP": str(temp)},
                work,
            )
            if summary is None:  # report.sh wants an existing file; an empty one is "no summary"
                summary_file.write_text("")
            action = run(
                "report.sh",
                ["bash", str(report_sh)],
                {
                    "INPUT_HUB_REPO": "acme/hub",
                    "INPUT_HUB_RUN_ID": HUB_RUN_ID,
                    "INPUT_STATUS": "success",
                    "INPUT_CALLBACK_TOKEN": cb,
                    "INPUT_TOKEN": common["TOKEN"],
                    "INPUT_SUMMARY_FILE": str(summary_file),
                },
                work,
            )
            for part in ("body.json", "headers", "url"):
                if inline[part] is None or inline[part] != action[part]:
                    problems.append(f"{what}: the report step's {part} differs from report.sh's:\n"
                                    f"  step:      {inline[part]!r:.300}\n  report.sh: {action[part]!r:.300}")
            if summary is not None and len(summary.encode()) > 64000 and b"summary truncated" not in (inline["body.json"] or b""):
                problems.append(f"{what}: the summary was not cut")
    return problems, len(cases)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    for tool in ("bash", "jq"):
        if shutil.which(tool) is None:
            print(f"check-spoke-templates: {tool} is required", file=sys.stderr)
            return 2
    try:
        plain, callback = load(sys.argv[1]), load(sys.argv[2])
        problems = check_in_step(plain, callback)
        payload_problems, cases = check_payload(callback, Path(sys.argv[3]))
        problems += payload_problems
    except (OSError, ValueError, KeyError, RuntimeError, subprocess.SubprocessError) as e:
        print(f"check-spoke-templates: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(p)
    print(f"check-spoke-templates: {len(problems)} problem(s) (the templates' steps compared; the "
          f"report payload compared with report.sh's in {cases} cases)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
