#!/usr/bin/env bash
# spokehub report: tell the hub that this spoke run has ended.
#
# Sends `repository_dispatch` (event_type `spoke_complete`) to the hub repository:
#   POST {api_url}/repos/{hub_repo}/dispatches
#   {"event_type":"spoke_complete","client_payload":{hub_run_id, repo, status, run_id,
#    run_attempt, run_url, callback_token, summary}}
# GitHub answers 204. client_payload may have at most 10 keys and must stay under 64 KB,
# so a long summary is cut and ends with a visible marker.
#
# Needs only bash, curl and jq, as found on GitHub's hosted runners.
#
# Input comes from the environment, so the composite action and tests drive it the same way:
#   INPUT_HUB_REPO        hub repository, owner/name                       (required)
#   INPUT_HUB_RUN_ID      the hub run id (lowercase UUID v4)              (required)
#   INPUT_STATUS          success | failure | cancelled                    (required)
#   INPUT_CALLBACK_TOKEN  the callback token the hub gave this spoke       (may be empty)
#   INPUT_TOKEN           token allowed to dispatch to the hub repository  (required)
#   INPUT_SUMMARY         short Markdown summary                           (optional)
#   INPUT_SUMMARY_FILE    file whose content is the summary (wins over INPUT_SUMMARY)
#   INPUT_API_URL         REST API base URL (default: $GITHUB_API_URL, then https://api.github.com)
# and what every runner sets: GITHUB_REPOSITORY, GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT,
# GITHUB_SERVER_URL, GITHUB_API_URL.
#
# Tuning (mainly for tests):
#   SPOKEHUB_REPORT_MAX_ATTEMPTS       attempts in all (default 5)
#   SPOKEHUB_REPORT_RETRY_DELAY_S      first back-off delay in seconds (default 2; doubles each time)
#   SPOKEHUB_REPORT_RETRY_MAX_DELAY_S  cap for one delay, also for retry-after (default 60)
#   SPOKEHUB_REPORT_TIMEOUT_S          curl --max-time per attempt (default 30)
#
# Retries 5xx, 429, 403 rate limits and connection failures, honouring `retry-after`; fails at
# once with GitHub's message on any other 4xx. Tokens are never printed: they reach curl
# through a private header file, never through its command line.
#
# Exit codes: 0 delivered, 1 rejected or gave up, 2 bad input.
set -euo pipefail

readonly MAX_PAYLOAD_BYTES=60000   # GitHub: client_payload < 64 KB; keep a margin
readonly MARKER=$'\n\n… [summary truncated by spokehub report: it exceeded the 64 KB callback limit; see the spoke run]'

die() { # exit code, message
  printf 'spokehub report: error: %s\n' "$2" >&2
  exit "$1"
}
log() { printf 'spokehub report: %s\n' "$*"; }

command -v curl >/dev/null || die 2 "curl is required"
command -v jq >/dev/null || die 2 "jq is required"

hub_repo=${INPUT_HUB_REPO:-}
hub_run_id=${INPUT_HUB_RUN_ID:-}
status=${INPUT_STATUS:-}
callback_token=${INPUT_CALLBACK_TOKEN:-}
token=${INPUT_TOKEN:-}
api_url=${INPUT_API_URL:-${GITHUB_API_URL:-https://api.github.com}}
api_url=${api_url%/}

[[ $hub_repo =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]] ||
  die 2 "hub-repo must be owner/name, got '${hub_repo}'"
[[ $hub_run_id =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] ||
  die 2 "hub-run-id must be a lowercase UUID v4, got '${hub_run_id}'"
case $status in
  success | failure | cancelled) ;;
  *) die 2 "status must be success, failure or cancelled, got '${status}'" ;;
esac
[[ -n $token ]] || die 2 "token is empty: the spoke needs a token that may dispatch to ${hub_repo}"
[[ $token != *$'\n'* && $token != *$'\r'* ]] || die 2 "token contains a line break"
[[ $api_url =~ ^https?:// ]] || die 2 "api-url must start with http:// or https://, got '${api_url}'"
for v in GITHUB_REPOSITORY GITHUB_RUN_ID GITHUB_RUN_ATTEMPT GITHUB_SERVER_URL; do
  [[ -n ${!v:-} ]] || die 2 "${v} is not set (run this inside GitHub Actions or set it)"
done
[[ $GITHUB_RUN_ID =~ ^[0-9]+$ ]] || die 2 "GITHUB_RUN_ID must be a number"
[[ $GITHUB_RUN_ATTEMPT =~ ^[0-9]+$ ]] || die 2 "GITHUB_RUN_ATTEMPT must be a number"

uint_env() { # name default
  local v=${!1:-$2}
  [[ $v =~ ^[0-9]+$ ]] || die 2 "$1 must be a whole number, got '${v}'"
  printf '%s' "$v"
}
max_attempts=$(uint_env SPOKEHUB_REPORT_MAX_ATTEMPTS 5)
delay=$(uint_env SPOKEHUB_REPORT_RETRY_DELAY_S 2)
max_delay=$(uint_env SPOKEHUB_REPORT_RETRY_MAX_DELAY_S 60)
timeout_s=$(uint_env SPOKEHUB_REPORT_TIMEOUT_S 30)
((max_attempts >= 1)) || die 2 "SPOKEHUB_REPORT_MAX_ATTEMPTS must be at least 1"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"

# The summary goes through a file: no argument or environment size limits, any bytes.
# Read at most 256 KiB: anything longer is cut below the limit anyway.
if [[ -n ${INPUT_SUMMARY_FILE:-} ]]; then
  [[ -f $INPUT_SUMMARY_FILE ]] || die 2 "summary-file '${INPUT_SUMMARY_FILE}' does not exist"
  head -c 262144 -- "$INPUT_SUMMARY_FILE" >"$work/summary"
else
  printf '%s' "${INPUT_SUMMARY:-}" >"$work/summary" # the environment caps it at 128 KiB
fi

run_url="${GITHUB_SERVER_URL%/}/${GITHUB_REPOSITORY}/actions/runs/${GITHUB_RUN_ID}"

# Build the body with jq (never by string pasting). The summary is cut, on a character
# boundary, so that the serialized client_payload stays within MAX_PAYLOAD_BYTES.
printf '%s' "$callback_token" >"$work/callback_token"
jq -n -c \
  --arg hub_run_id "$hub_run_id" \
  --arg repo "$GITHUB_REPOSITORY" \
  --arg status "$status" \
  --argjson run_id "$GITHUB_RUN_ID" \
  --argjson run_attempt "$GITHUB_RUN_ATTEMPT" \
  --arg run_url "$run_url" \
  --rawfile callback_token "$work/callback_token" \
  --rawfile summary "$work/summary" \
  --argjson max "$MAX_PAYLOAD_BYTES" \
  --arg marker "$MARKER" '
  def size: tojson | utf8bytelength;
  # Longest prefix of the string (in characters) that, with the marker, serializes in $budget bytes.
  def fit($budget):
    . as $s
    | if ($s | size) <= $budget then $s
      else [0, ($s | length)]
        | until(.[1] - .[0] <= 1;
            ((.[0] + .[1]) / 2 | floor) as $mid
            | if (($s[:$mid] + $marker) | size) <= $budget then [$mid, .[1]] else [.[0], $mid] end)
        | $s[:.[0]] + $marker
      end;
  {hub_run_id: $hub_run_id, repo: $repo, status: $status, run_id: $run_id,
   run_attempt: $run_attempt, run_url: $run_url, callback_token: $callback_token, summary: ""}
  | . as $p
  | .summary = ($summary | fit($max - ($p | size) + 2))
  | {event_type: "spoke_complete", client_payload: .}
  ' >"$work/body.json" || die 2 "could not build the request body"

# Headers live in a private file so the token never appears on a command line (ps).
{
  printf 'Authorization: Bearer %s\n' "$token"
  printf 'Accept: application/vnd.github+json\n'
  printf 'X-GitHub-Api-Version: 2022-11-28\n'
  printf 'Content-Type: application/json\n'
  printf 'User-Agent: spokehub-report\n'
} >"$work/headers"
chmod 600 "$work/headers"

url="${api_url}/repos/${hub_repo}/dispatches"
log "reporting ${status} for hub run ${hub_run_id} to ${hub_repo}"

# One attempt. Sets http_code (000 when no answer) and retry_after (seconds or empty).
attempt_once() {
  local rc=0
  : >"$work/resp_headers"
  : >"$work/resp_body"
  http_code=$(curl --silent --show-error --max-time "$timeout_s" --request POST \
    --header "@$work/headers" --data-binary "@$work/body.json" \
    --dump-header "$work/resp_headers" --output "$work/resp_body" \
    --write-out '%{http_code}' -- "$url" 2>"$work/curl_err") || rc=$?
  if ((rc != 0)); then
    http_code=000
    curl_error=$(tr -d '\r' <"$work/curl_err" | tail -n 1 | redact)
  fi
  retry_after=$(resp_header retry-after)
  [[ $retry_after =~ ^[0-9]+$ ]] || retry_after=
  # Primary rate limit spent: wait for the reset GitHub names (capped below like retry-after).
  local remaining reset
  remaining=$(resp_header x-ratelimit-remaining)
  reset=$(resp_header x-ratelimit-reset)
  if [[ -z $retry_after && $remaining == 0 && $reset =~ ^[0-9]+$ ]]; then
    retry_after=$((reset > $(date +%s) ? reset - $(date +%s) : 0))
  fi
}

# Replaces the tokens in stdin with ***, in case an answer ever echoes them back.
redact() {
  local text
  text=$(cat)
  text=${text//"$token"/***}
  [[ -n $callback_token ]] && text=${text//"$callback_token"/***}
  printf '%s' "$text"
}

# GitHub's message from an error body, or the start of the body itself, without control characters.
error_message() {
  local msg
  msg=$(jq -r '[.message, (.errors // [] | map(.message // tostring) | join("; "))] | map(select(. != null and . != "")) | join(": ")' \
    <"$work/resp_body" 2>/dev/null) || msg=$(head -c 500 "$work/resp_body")
  # Whole-input filters only (no early-closing reader, so no SIGPIPE under pipefail).
  msg=$(printf '%s' "$msg" | tr -d '\000-\010\013-\037' | redact)
  printf '%s' "${msg:0:1000}"
}

# A response header's value (last occurrence), or nothing.
resp_header() {
  tr -d '\r' <"$work/resp_headers" | awk -F': *' -v h="$1" 'tolower($1)==h{v=$2} END{print v}'
}

n=0
while :; do
  n=$((n + 1))
  curl_error=
  attempt_once
  case $http_code in
    2??)
      log "delivered (HTTP ${http_code}) after ${n} attempt(s)"
      exit 0
      ;;
    000) why="no answer (${curl_error:-connection failed})" ;;
    429 | 5??) why="HTTP ${http_code}: $(error_message)" ;;
    403)
      if [[ -n $retry_after || $(resp_header x-ratelimit-remaining) == 0 ]] ||
        grep -qi 'rate limit' "$work/resp_body"; then
        why="HTTP 403 rate limited: $(error_message)"
      else
        die 1 "the hub repository ${hub_repo} refused the report (HTTP 403): $(error_message). Does the token have Contents write on it?"
      fi
      ;;
    404) die 1 "HTTP 404 from ${url}: $(error_message). Is hub-repo right, and is the token allowed to see it?" ;;
    *) die 1 "the report was rejected (HTTP ${http_code}): $(error_message)" ;;
  esac
  if ((n >= max_attempts)); then
    die 1 "giving up after ${n} attempts; last: ${why}"
  fi
  wait_s=$delay
  [[ -n $retry_after ]] && wait_s=$retry_after
  ((wait_s > max_delay)) && wait_s=$max_delay
  log "attempt ${n} failed: ${why}; retrying in ${wait_s}s"
  sleep "$wait_s"
  delay=$((delay * 2))
  ((delay > max_delay)) && delay=$max_delay
done
