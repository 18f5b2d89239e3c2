#!/usr/bin/env bash
# Every figure the README gives "on a quiet machine" for issues 17, 19 and 21, in one run (about 35 min).
# Run it from the repository root when nothing else runs on the machine (no tests, no other servers),
# after `python -m somad fit --data-dir ../shared/data/mvtec_ad --category bottle`. Output: $OUT (a folder).
set -u
OUT=${OUT:-quiet-$(date -u +%Y%m%dT%H%M)}
mkdir -p "$OUT"
DATA=${DATA:-../shared/data/mvtec_ad}
echo "start $(date -u +%FT%TZ) load $(cat /proc/loadavg)" | tee "$OUT/log.txt"
for extra in "" "--footprint"; do   # issue 19: click latency, without and with a test image's footprint
  python benchmarks/browser_clicks.py --models-dir models --data-dir "$DATA" --category bottle --clicks 10 \
    $extra --json "$OUT/clicks.jsonl" > "$OUT/clicks$extra.log" 2>&1
  tail -3 "$OUT/clicks$extra.log" | tee -a "$OUT/log.txt"
done
# issue 21: partial_fit of 3 images into the default bottle model
python benchmarks/teach.py --data-dir "$DATA" --category bottle --scenario light \
  --model-dir models/bottle/default --k 3 --time-only > "$OUT/teach-time.log" 2>&1
tail -2 "$OUT/teach-time.log" | tee -a "$OUT/log.txt"
# issue 17: several viewers
SOMAD_LOAD_SHOTS="$OUT/shots" python benchmarks/dashboard_load.py --viewers 1 4 8 --seconds 240 --uploads 3 --settle 130 --think 3 \
  --data-dir "$DATA" --out "$OUT/dashboard_load.json" > "$OUT/dashboard_load.log" 2>&1
tail -6 "$OUT/dashboard_load.log" | tee -a "$OUT/log.txt"
echo "end $(date -u +%FT%TZ) load $(cat /proc/loadavg)" | tee -a "$OUT/log.txt"
