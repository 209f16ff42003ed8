# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154  # globals shared with scripts/test-slurm
# test-slurm payload usable today: the job runs standin-run (in place of `lclstreamer run`), which
# writes `lclstreamer inspect --json` of a shared sample run (fakesteps, xpptut15 run 14: 10
# events in 2 streams) laid out under an S3DF-style data root, on every rank of the job.

payload_prepare() { # WORK
  local work="$1" samples
  samples="$(realpath "$repo/tests/data/xtc2/fakesteps")"
  [ -d "$samples" ] || { echo "inspect payload: no samples at $samples" >&2; return 1; }
  P_EXP=xpptut15 P_RUN=14 P_ROOT="$work/data" P_CONFIG="$work/config.yaml"
  local xtc="$P_ROOT/xpp/xpptut15/xtc"
  mkdir -p "$xtc/smalldata"
  cp "$samples"/xpptut15-r0014-s00[01]-c000.xtc2 "$xtc/"
  cp "$samples"/smalldata/xpptut15-r0014-s00[01]-c000.smd.xtc2 "$xtc/smalldata/"
  echo "# read by standin-run only" > "$P_CONFIG"
  P_BIN="$repo/scripts/test-slurm.d/standin-run"
  export LCLSTREAMER_REAL_BIN="$real_bin"
}

payload_start_job() { :; } # TAG DIR

payload_check() { # TAG DIR SUMMARY
  local dir="$2" summary="$3" ranks want_ranks
  [ -s "$summary" ] || { echo "no summary $summary" >&2; return 1; }
  python3 - "$summary" <<'PY' || return 1
import json, sys
s = json.load(open(sys.argv[1]))
events, files = len(s["events"]), len(s["files"])
# The sample's runinfo says run 1 although its files are named r0014.
assert s["run"]["expt"] == "xpptut15", s["run"]
assert files == 4, f"{files} files"
assert events == 10, f"{events} events, expected 10"
print(f"  summary: {files} files, {events} events of xpptut15 run 14")
PY
  ranks="$(find "$dir" -name 'summary.json.rank*' | wc -l)"
  want_ranks="$(nproc)"
  [ "$ranks" -eq "$want_ranks" ] || { echo "$ranks ranks ran, expected $want_ranks (one per core)" >&2; return 1; }
  echo "  ranks: $ranks ($(tr '\n' ';' < "$dir/summary.json.rank0"))"
}

payload_check_counters() { # ELOG_LOG JOB
  python3 - "$1" "$2" "$P_ROOT" <<'PY'
import json, sys
posts = [json.loads(l) for l in open(sys.argv[1])]
job, root = sys.argv[2], sys.argv[3]
assert posts, "no counters were posted"
for p in posts:
    assert p["content_type"] == "application/json", p
    assert isinstance(p["body"], list) and all(set(o) == {"key", "value"} for o in p["body"]), p
last = {o["key"]: o["value"] for o in posts[-1]["body"]}
want = {"<b>Events</b>": 10, "<b>Last Event</b>": 10, "Job": int(job), "Root": root, "Location": "LOCAL"}
for k, v in want.items():
    assert last.get(k) == v, f"counter {k!r} = {last.get(k)!r}, expected {v!r} (all: {last})"
print(f"  counters: {len(posts)} post(s), last: {last}")
PY
}

payload_cleanup() { :; }
