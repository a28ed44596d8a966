#!/usr/bin/env bash
# The paper's bursty window (seconds 1301160–1302360, ÷ 8) against ipa local with the controller.
set -u
cd /work/main
out=docs/run-bursty
mkdir -p $out
rm -f $out/decisions.jsonl
./bin/ipa local --pipeline classify --controller --controller.profile profiles/measured/classify.json \
  --controller.interval 10s --controller.decision-log $out/decisions.jsonl --http.listen-addr 127.0.0.1:18200 > /tmp/run20-local.log 2>&1 &
pid=$!
for i in $(seq 1 60); do curl -sf localhost:18200/v2/health/ready >/dev/null && break; sleep 1; done
./bin/ipa load --url http://127.0.0.1:18200/v2/models/classify/infer --pattern trace --start 1301160 --end 1302360 --damping 8 --arrivals burst \
  --body docs/sample-page.png --sla 1s --report $out/load-report.json --records /tmp/run20-records.jsonl --no-progress > $out/load.txt 2>&1
kill -INT $pid; wait $pid
./bin/ipa report --decisions $out/decisions.jsonl --records /tmp/run20-records.jsonl --load-report $out/load-report.json --out $out --format svg > $out/summary.txt 2>&1
echo done
