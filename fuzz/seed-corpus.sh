#!/usr/bin/env bash
# Seeds the fuzz corpora with real files made by the outpost program: flows (emissions, a
# return, bootstrap files), scenarios and settings. Run from the repository's root after
# `cargo build --release`; the fuzzers grow the corpora from there.
set -euo pipefail
o="$PWD/target/release/outpost"
c="$PWD/fuzz/corpus"
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
mkdir -p "$c"/{flow_decode,bootstrap,config_parsers,apply_changes} "$w/usb"
cd "$w"
"$o" central init --data asoc >/dev/null
"$o" central add-remote --data asoc --id 2 --code BSOC --sync "fixed 21:00 23:20" --bootstrap usb/bsoc.outpost >/dev/null
"$o" central add-remote --data asoc --id 3 --code CSOC --tz America/New_York --deny stock_documents --bootstrap usb/csoc.outpost >/dev/null
"$o" remote init --data bsoc --bootstrap usb/bsoc.outpost >/dev/null
"$o" put --data asoc --table articles --key A1 --fields '{"name": "Lamp", "price": "19.90"}' >/dev/null
"$o" put --data bsoc --table customers --key BSOC-1 --fields '{"name": "Dupont", "city": "Lyon"}' >/dev/null
"$o" delete --data bsoc --table customers --key BSOC-1 >/dev/null 2>&1 || true
"$o" put --data bsoc --table customers --key BSOC-2 --fields '{"name": "Martin"}' >/dev/null
"$o" remote export --data bsoc --out usb/e1.outpost >/dev/null
"$o" central import --data asoc usb/e1.outpost >/dev/null
"$o" central process --data asoc >/dev/null 2>&1 || true
"$o" central export-return --data asoc --site BSOC --out usb/r1.outpost >/dev/null
# flow_decode's first byte chooses the mode: 0 as it is, 1 with its checksums made right.
for f in e1:emission r1:return bsoc:bootstrap; do
    { printf '\000'; cat "usb/${f%%:*}.outpost"; } > "$c/flow_decode/plain-${f#*:}"
    { printf '\001'; cat "usb/${f%%:*}.outpost"; } > "$c/flow_decode/fixed-${f#*:}"
done
cp usb/bsoc.outpost "$c/bootstrap/bsoc"
cp usb/csoc.outpost "$c/bootstrap/csoc"
cp "$OLDPWD"/scenarios/*.toml "$c/config_parsers/" 2>/dev/null || true
printf 'time_zone=Europe/Paris\nsync_types=fixed 21:00 23:20;immediate 60\n' > "$c/config_parsers/settings"
printf 'listen = "127.0.0.1:2638"\nmax_flow_bytes = 1000\nrequest_timeout_s = 5\n' > "$c/config_parsers/serve.toml"
printf 'central_url = "http://127.0.0.1:2638"\ncredential = "BSOC.00"\n' > "$c/config_parsers/remote.toml"
echo "corpus seeded in $c"
