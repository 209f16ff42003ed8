# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154  # globals shared with scripts/test-slurm
# test-slurm payload for the real pipeline: a synthetic ePix10k2M run (`lclstreamer synth`), a
# `lclstreamer pull` consumer started before each job, and the job running `lclstreamer run` with
# configs/demo.yaml; the consumer must receive every batch and event the job reports as sent.
#
# DRAFT until `run` (issue 6), `synth` (issue 3) and `pull` (issue 5) are merged: it follows the
# command lines those issues describe; the pull options (--listen, --summary) and the summary keys
# read in payload_check are assumptions to confirm. It stops with a clear message when the binary
# lacks one of these commands.

demo_events=40

payload_prepare() { # WORK
  local work="$1" cmd
  for cmd in run synth pull; do
    "$real_bin" help "$cmd" >/dev/null 2>&1 \
      || { echo "demo payload: this lclstreamer has no '$cmd' command yet (issues 3, 5, 6)" >&2; return 1; }
  done
  P_EXP=tstx00117 P_RUN=1 P_ROOT="$work/data" P_BIN="$real_bin"
  "$real_bin" synth --out "$P_ROOT" --exp "$P_EXP" --run "$P_RUN" --detector epix10k2M \
    --events "$demo_events" --streams 2 --seed 7 >/dev/null
  P_CONFIG="$work/demo.yaml"
  cp "$repo/configs/demo.yaml" "$P_CONFIG"
  demo_url="$(grep -o 'tcp://[^" ]*' "$P_CONFIG" | head -n1)"
  [ -n "$demo_url" ] || { echo "demo payload: no tcp:// sink URL in configs/demo.yaml" >&2; return 1; }
}

payload_start_job() { # TAG DIR
  "$real_bin" pull --listen "$demo_url" --summary "$2/pull.json" > "$2/pull.log" 2>&1 &
  demo_pull_pid=$!
  pids+=("$demo_pull_pid")
}

payload_check() { # TAG DIR SUMMARY
  local dir="$2" summary="$3"
  wait "$demo_pull_pid" || { echo "pull failed: $(tail -n 5 "$dir/pull.log")" >&2; return 1; }
  python3 - "$summary" "$dir/pull.json" "$demo_events" <<'PY'
import json, sys
sent, got, n = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
assert sent["events_read"] == n, f"run read {sent['events_read']} of {n} events"
for k in ("batches", "events"):
    assert got[k] == sent["sent"][k], f"consumer got {got[k]} {k}, run sent {sent['sent'][k]}"
print(f"  run read {n} events; consumer received {got['batches']} batches, {got['events']} events")
PY
}

payload_check_counters() { # ELOG_LOG JOB
  python3 - "$1" <<'PY'
import json, sys
posts = [json.loads(l) for l in open(sys.argv[1])]
assert posts, "no counters were posted"
for p in posts:
    assert p["content_type"] == "application/json", p
    assert isinstance(p["body"], list) and p["body"], p
    assert all(set(o) == {"key", "value"} for o in p["body"]), p
print(f"  counters: {len(posts)} post(s), last: {posts[-1]['body']}")
PY
}

payload_cleanup() { :; }
