#!/usr/bin/env bash
# Side-by-side whole-process comparison of compatrun with its peers, timed by hyperfine,
# printed as a markdown table (mean wall time, and the ratio to native from the same run).
#
# Usage: scripts/bench-peers.sh [RUNS]          (RUNS per command, default 10)
#
# Columns, each only if the tool is installed and passes a probe (a failing probe is
# reported under the table with the tool's own error):
#   native                    the command as it is
#   compatrun P host          $COMPATRUN --platform P -k host -- CMD, P = ptrace, seccomp
#                             (nothing caught: the cost of the filter, and under ptrace of
#                             tracing process creation)
#   compatrun P 2.6           $COMPATRUN --platform P -k 2.6 -- CMD
#   proot VERSION -k 2.6.32   for each proot in $PROOT (default: proot in PATH)
#   qemu-x86_64 -r 2.6.32     qemu-user; it does not follow execve, so the children of the
#                             first process run natively (rows marked †)
#   setarch --uname-2.6       the UNAME26 personality (util-linux): uname only, no
#                             emulation, inherited by children
#
# Environment:
#   COMPATRUN   compatrun binary (default target/release/compatrun, built if missing)
#   PROOT       space-separated proot binaries to compare (e.g. "/usr/bin/proot
#               /opt/proot-5.4/proot"); default: the proot in PATH
#   NO_INSTALL  set to 1 to never apt-get install hyperfine, qemu-user or proot
#   OUT         directory for hyperfine's JSON files (default: a temporary directory)
#
# Installs only Debian packages (hyperfine, qemu-user, proot) when missing and allowed;
# downloads nothing else. Absolute times are noise on a shared machine; compare ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${1:-10}"
WARMUP=1

# --- tools ------------------------------------------------------------------------------
install_missing() {
  [ "${NO_INSTALL:-0}" = 1 ] && return 0
  command -v apt-get >/dev/null || return 0
  local missing=()
  command -v hyperfine >/dev/null || missing+=(hyperfine)
  command -v qemu-x86_64 >/dev/null || missing+=(qemu-user)
  command -v proot >/dev/null || missing+=(proot)
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bench-peers: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2 || true
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || true
}
install_missing
command -v hyperfine >/dev/null || { echo "bench-peers: hyperfine is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-peers: python3 is required" >&2; exit 1; }

COMPATRUN="${COMPATRUN:-target/release/compatrun}"
if [ ! -x "$COMPATRUN" ]; then
  echo "bench-peers: building compatrun" >&2
  cargo build --release >&2
fi
COMPATRUN="$(realpath "$COMPATRUN")"

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
OUT="${OUT:-$WORK}"
mkdir -p "$OUT"

# --- workloads (the same as benches/workloads.rs) -------------------------------------
gen_c() {
  printf '#include <stddef.h>\n#include <string.h>\n\n'
  local i m
  for ((i = 0; i < 40; i++)); do
    m=$((i % 7 + 2))
    cat <<EOF
struct rec$i { int key; double weight; char name[16]; struct rec$i *next; };

static int cmp$i(const struct rec$i *a, const struct rec$i *b) {
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return strcmp(a->name, b->name);
}

struct rec$i *sort$i(struct rec$i *head) {
    struct rec$i *sorted = NULL;
    while (head) {
        struct rec$i *n = head, **p = &sorted;
        head = head->next;
        while (*p && cmp$i(*p, n) < 0) p = &(*p)->next;
        n->next = *p;
        *p = n;
    }
    return sorted;
}

double sum$i(const struct rec$i *r, size_t limit) {
    double s = 0;
    for (size_t k = 0; r && k < limit; r = r->next, k++) {
        s += r->weight * (double)(k % $m + 1);
        if (s > 1e9) s /= $i + 2.0;
    }
    return s;
}

EOF
  done
}
gen_c >"$WORK/workload.c"

# Names and commands (run with hyperfine -N: no shell around them). Programs are given by
# absolute path: qemu-user does not search PATH.
SH="$(command -v sh)" FIND="$(command -v find)" GCC="$(command -v gcc)" UNAME="$(command -v uname)"
WL_NAMES=(sh-300-true tar-doc find-usr python-imports gcc-O2)
WL_CMDS=(
  "$SH -c 'i=0; while [ \$i -lt 300 ]; do /bin/true; i=\$((i+1)); done'"
  "$SH -c 'tar -cf - /usr/share/doc 2>/dev/null | cat >/dev/null'"
  "$FIND /usr"
  "$PY -c 'import json, subprocess, threading, decimal'"
  "$GCC -O2 -c -o $WORK/workload.o $WORK/workload.c"
)
# Workloads whose first process execs others (qemu-user runs those natively).
WL_EXECS=(sh-300-true tar-doc gcc-O2)

# --- runners: label | prefix | kind --------------------------------------------------
RUNNERS=("native||native")
NOTES=()

probe() { # probe LABEL PREFIX EXPECTED-RELEASE-PREFIX
  local label="$1" prefix="$2" want="$3" out
  if ! out="$($prefix /bin/true 2>&1)"; then
    NOTES+=("$label: cannot run a dynamically linked program here: \`${out//$'\n'/ }\`")
    return 1
  fi
  out="$($prefix "$UNAME" -r 2>&1 || true)"
  if [[ "$out" != "$want"* ]]; then
    NOTES+=("$label: \`uname -r\` says \`$out\`, not $want*")
    return 1
  fi
  return 0
}

for platform in ptrace seccomp; do
  probe "compatrun $platform host" "$COMPATRUN --platform $platform -k host --" "$(uname -r)" &&
    RUNNERS+=("compatrun $platform host|$COMPATRUN --platform $platform -k host --|compatrun")
  probe "compatrun $platform 2.6" "$COMPATRUN --platform $platform -k 2.6 --" "2.6.32" &&
    RUNNERS+=("compatrun $platform 2.6|$COMPATRUN --platform $platform -k 2.6 --|compatrun")
done

PROOTS="${PROOT:-$(command -v proot || true)}"
for p in $PROOTS; do
  [ -x "$p" ] || { NOTES+=("proot $p: not found"); continue; }
  ver="$("$p" --version 2>&1 | sed -n 's/^|__|.*| *\([0-9][0-9.]*\).*$/\1/p' | head -1)"
  label="proot ${ver:-$p} -k 2.6.32"
  if probe "$label" "$p -k 2.6.32" "2.6.32"; then
    RUNNERS+=("$label|$p -k 2.6.32|proot")
  fi
done

if command -v qemu-x86_64 >/dev/null; then
  probe "qemu-x86_64 -r 2.6.32" "qemu-x86_64 -r 2.6.32" "2.6.32" &&
    RUNNERS+=("qemu-x86_64 -r 2.6.32|qemu-x86_64 -r 2.6.32|qemu")
else
  NOTES+=("qemu-x86_64: not installed (Debian package qemu-user)")
fi
if command -v setarch >/dev/null; then
  probe "setarch --uname-2.6" "setarch --uname-2.6" "2.6." &&
    RUNNERS+=("setarch --uname-2.6|setarch --uname-2.6|setarch")
fi

# --- measure ---------------------------------------------------------------------------
echo "bench-peers: ${#WL_NAMES[@]} workloads x ${#RUNNERS[@]} runners, $RUNS runs each" >&2
for i in "${!WL_NAMES[@]}"; do
  name="${WL_NAMES[$i]}" cmd="${WL_CMDS[$i]}"
  args=()
  for r in "${RUNNERS[@]}"; do
    IFS='|' read -r label prefix _ <<<"$r"
    args+=(--command-name "$label" "${prefix:+$prefix }$cmd")
  done
  hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --style basic \
    --export-json "$OUT/$name.json" "${args[@]}" >&2
done

# --- table -----------------------------------------------------------------------------
labels=()
for r in "${RUNNERS[@]}"; do labels+=("${r%%|*}"); done

echo
echo "Machine: $(nproc) CPUs, $(uname -sr), $(date -u +%Y-%m-%d); $RUNS runs + $WARMUP warm-up each (hyperfine $(hyperfine --version | cut -d' ' -f2))."
echo
EXECS="${WL_EXECS[*]}" "$PY" - "$OUT" "${#labels[@]}" "${labels[@]}" "${WL_NAMES[@]}" <<'PYEOF'
import json, os, sys
out, n = sys.argv[1], int(sys.argv[2])
labels = sys.argv[3:3 + n]
names = sys.argv[3 + n:]
execs = os.environ["EXECS"].split()

def fmt(s):
    return f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.2f} s"

print("| workload | " + " | ".join(labels) + " |")
print("|---|" + "---:|" * len(labels))
for name in names:
    dagger = "†" if name in execs else ""
    with open(f"{out}/{name}.json") as f:
        results = {r["command"]: r for r in json.load(f)["results"]}
    base = results[labels[0]]["mean"]
    cells = []
    for label in labels:
        r = results.get(label)
        if r is None:
            cells.append("–")
            continue
        mark = dagger if label.startswith("qemu") else ""
        cell = f"{fmt(r['mean'])} ± {fmt(r['stddev'])}"
        if label != labels[0]:
            cell += f" ({r['mean'] / base:.2f}x){mark}"
        cells.append(cell)
    print(f"| {name} | " + " | ".join(cells) + " |")
PYEOF
echo
if printf '%s\n' "${labels[@]}" | grep -q '^qemu'; then
  echo "† qemu-user emulates only the first process: what it execs (the shell's /bin/true, tar and cat, gcc's cc1 and as) runs natively."
fi
for n in "${NOTES[@]}"; do echo "- not run: $n"; done
