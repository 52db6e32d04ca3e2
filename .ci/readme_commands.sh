#!/usr/bin/env bash
# The README's commands that need no checkpoint of the user's, run exactly as the README writes them, from the
# checkout's root in .ci/run's venv: the face demo, `ui` (its page and API answer), `prompt`, `plan`, `presets`,
# the demo `compare` (its pass counts as the README writes them) and `faces` (on a copy of the bundled photo named
# as in the README). Called from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill "$ui_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
ui_pid=""

run() {   # run "COMMAND" as the README writes it; its output goes to the log, shown when it fails
    echo "\$ $1"
    bash -c "$1" >"$work/out.log" 2>&1 || { cat "$work/out.log"; echo "README command failed: $1"; exit 1; }
}

run 'python -m tlok_workflow run --recipe examples/face-demo.json --init-image examples/astronaut.png --out outputs'
ls outputs/*-face.png >/dev/null || { echo "the face demo wrote no face stage"; exit 1; }
run 'python -m tlok_workflow prompt --shot closeup --subject "Emma Watson" --outfit defa --weight 1.3 --medium "cosplay photograph"'
grep -q "wearing defa outfit:1.3" "$work/out.log" || { cat "$work/out.log"; exit 1; }
run 'python -m tlok_workflow plan --shot full-shot --preset quality'
run 'python -m tlok_workflow presets'
run "cd $work && python -m tlok_workflow compare --demo --seed 7 --vary stages.1536.cfg_scale=7,4 --vary stages.style.denoise=0.5,0.3"
grep -q "4 cell(s): 13 pass(es) run, 7 reused (20 if every cell ran from scratch)" "$work/out.log" && ls "$work"/outputs/*grid*.png >/dev/null || { cat "$work/out.log"; echo "compare: not the README's passes or no grid"; exit 1; }
cp examples/astronaut.png "$work/photo.jpg"
run "cd $work && python -m tlok_workflow faces photo.jpg --out preview.png"
[ -s "$work/preview.png" ] || { echo "faces wrote no preview"; exit 1; }

echo '$ python -m tlok_workflow ui'
(cd "$work" && exec python -m tlok_workflow ui >"$work/ui.log" 2>&1) &
ui_pid=$!
for _ in $(seq 120); do
    url=$(grep -o 'TLOK Workflow: http://[^ ]*' "$work/ui.log" | cut -d' ' -f3 || true)
    [ -n "$url" ] && break
    kill -0 "$ui_pid" 2>/dev/null || { cat "$work/ui.log"; echo "ui exited"; exit 1; }
    sleep 1
done
[ -n "$url" ] || { cat "$work/ui.log"; echo "ui did not say where it serves"; exit 1; }
page=$(curl -s -o /dev/null -w '%{http_code}' "$url")
presets=$(curl -s -o /dev/null -w '%{http_code}' "${url%/}/tlok-workflow/v1/presets")
[ "$page" = 200 ] && [ "$presets" = 200 ] || { cat "$work/ui.log"; echo "ui answered $page on / and $presets on the API"; exit 1; }
echo "ui: $url answered 200 on / and on /tlok-workflow/v1/presets"
