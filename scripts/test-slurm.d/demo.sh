# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154  # globals shared with scripts/test-slurm
# test-slurm payload for the real pipeline: a synthetic ePix10k2M run (`lclstreamer synth`),
# configs/demo.yaml pointed at it and at a free local port (one writer), a `lclstreamer pull`
# consumer started before each job, and the job running `lclstreamer run` under mpirun/srun. The
# consumer must see the end of stream with matching counts and receive every batch the job's
# summary reports as sent.

demo_events="${DEMO_EVENTS:-40}"

payload_prepare() { # WORK
  local work="$1" cmd
  for cmd in run synth pull; do
    "$real_bin" help "$cmd" >/dev/null 2>&1 \
      || { echo "demo payload: this lclstreamer has no '$cmd' command (issues 3, 5, 6)" >&2; return 1; }
  done
  P_EXP=mfxdemo01 P_RUN=1 P_ROOT="$work/data" P_BIN="$real_bin" P_CONFIG="$work/demo.yaml"
  "$real_bin" synth --out "$P_ROOT" --exp "$P_EXP" --run "$P_RUN" --detector epix10k2M \
    --events "$demo_events" --streams 2 --seed 7 --hit-rate 0.5 2>&1 | sed 's/^/  /'
  demo_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # The demo's paths are relative to configs/; point them at this run, the sink at the free port.
  sed -e "s#\.\./demo-out/data#$P_ROOT#g" -e "s#tcp://127\.0\.0\.1:[0-9]*#tcp://127.0.0.1:$demo_port#" \
    -e 's#^\(  events_per_unit:.*\)$#\1\n  writers: 1#' "$repo/configs/demo.yaml" > "$P_CONFIG"
  if ! grep -q "tcp://127.0.0.1:$demo_port" "$P_CONFIG" || ! grep -q "^  writers: 1" "$P_CONFIG"; then
    echo "demo payload: configs/demo.yaml changed shape; cannot point it at the test run" >&2
    return 1
  fi
}

payload_start_job() { # TAG DIR
  "$real_bin" pull "tcp://127.0.0.1:$demo_port" --producers 1 --timeout 60 --out "$2/received" \
    > "$2/pull.txt" 2>&1 &
  demo_pull_pid=$!
  pids+=("$demo_pull_pid")
}

payload_start_live() { # DIR LIVE_ROOT: a consumer, then the run written at 20 Hz from now on
  payload_start_job live "$1"
  local src="$P_ROOT/${P_EXP:0:3}/$P_EXP/xtc" to="$2/${P_EXP:0:3}/$P_EXP/xtc"
  sleep 1
  "$real_bin" replay --from "$src" --to "$to" --rate 20 > "$1/replay.txt" 2>&1 &
  pids+=("$!")
}

payload_check() { # TAG DIR SUMMARY
  local dir="$2" summary="$3"
  wait "$demo_pull_pid" || { echo "pull did not receive a complete stream:" >&2; cat "$dir/pull.txt" >&2; return 1; }
  python3 - "$summary" "$dir/received" "$demo_events" <<'PY' || return 1
import json, os, sys
s, received, n = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3])
files = [f for f in os.listdir(received) if f.endswith(".h5")] if os.path.isdir(received) else []
assert s["events_read"] == n, f"run read {s['events_read']} of {n} events"
assert s["processed"] + s["damaged"] == n, s
assert s["batches"] > 0 and s["events_sent"] > 0, "nothing was sent"
assert len(files) == s["batches"], f"consumer wrote {len(files)} batch files, run sent {s['batches']}"
print(f"  run: {n} events on {s['ranks']} ranks, {s['hits']} hits, sent {s['events_sent']} events "
      f"in {s['batches']} batches; consumer received {len(files)} batches")
PY
  sed 's/^/  pull: /' "$dir/pull.txt" | tail -n 3
}

payload_check_counters() { # ELOG_LOG JOB
  python3 - "$1" <<'PY'
import json, sys
posts = [json.loads(l) for l in open(sys.argv[1])]
assert posts, "no counters were posted (is arp::Reporter wired into `lclstreamer run`?)"
for p in posts:
    assert p["content_type"] == "application/json", p
    assert isinstance(p["body"], list) and p["body"], p
    assert all(set(o) == {"key", "value"} for o in p["body"]), p
print(f"  counters: {len(posts)} post(s), last: {posts[-1]['body']}")
PY
}

payload_cleanup() { :; }
