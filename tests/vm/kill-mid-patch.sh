#!/bin/sh
# Runs inside the VM (busybox sh, in /work next to ./compatrun): compatrun stopped
# exactly in the middle of rewriting a vsyscall call site (COMPATRUN_TEST_STOP_MID_PATCH
# makes it stop itself there, see src/test_hooks.rs), then either killed with SIGKILL
# or continued with SIGCONT. Prints "key: value" lines that tests/vm_vsyscall.rs checks.
#
# Usage: kill-mid-patch.sh kill|cont PROGRAM [ARGS...]
#
# kill: (the run asks for a --report) what compatrun logged up to the stop, the site's
#       bytes in the stopped guest (read through /proc/PID/mem), the state of every
#       compatrun and guest process while stopped, the exit status, the processes left
#       after the kill, the mounts, files and directories that differ from before the
#       run, whether PROGRAM's file changed, and then a second run's output (no hook,
#       same VM boot).
# cont: compatrun's output and status when the stopped patch is let go on.
set -u
mode=$1
shift
prog=$1
state=/kill-mid-patch

# Every mount, and every file and directory where compatrun could leave one.
snapshot() {
  cat /proc/mounts
  ls -a /
  find /tmp /run /mnt /dev /work /root 2>/dev/null
}

# "PID NAME STATE" of each process named compatrun* or after the program (a comm name
# is cut at 15 characters).
watched() {
  name=$(basename "$prog" | cut -c1-15)
  for s in /proc/[0-9]*/status; do
    awk -v n="$name" -v p="${s%/status}" '
      /^Name:/ { name = $2 } /^State:/ { st = $2 }
      END { if (name == n || name ~ /^compatrun/) print substr(p, 7), name, st }' \
      "$s" 2>/dev/null
  done
}

before=$(snapshot | sort)
sum=$(md5sum <"$prog")
mkdir -p "$state"
# Killed, the run asks for a report too: no report, and no temporary file of one, may
# be left (compatrun writes it when the run ends, through a file renamed into place).
report=""
[ "$mode" = kill ] && report="--report /tmp/kill-mid-patch.json"
# shellcheck disable=SC2086 # $report is two words or none
COMPATRUN_TEST_STOP_MID_PATCH=1 ./compatrun --log debug -k rhel6 $report -- "$@" \
  >"$state/out" 2>"$state/log" &
pid=$!
n=0
while :; do
  st=$(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
  [ "$st" = T ] && break
  if [ -z "$st" ] || [ "$st" = Z ] || [ $n -ge 1200 ]; then
    echo "stopped: no (state '$st' after $n waits)"
    cat "$state/log" "$state/out"
    kill -9 "$pid" 2>/dev/null
    exit 1
  fi
  n=$((n + 1))
  usleep 100000
done
echo "stopped: yes"

if [ "$mode" = cont ]; then
  kill -CONT "$pid"
  wait "$pid"
  echo "status: $?"
  sed 's/^/out: /' "$state/out"
  sed 's/^/log: /' "$state/log"
  rm -rf "$state"
  exit 0
fi

# The stopped state: every process and each guest thread, and the half-written site.
watched | sed 's/^/process: /'
for p in $(watched | awk '$2 !~ /^compatrun/ { print $1 }'); do
  echo "guest-ns: $p $(awk '/^NSpid:/ { $1 = ""; print }' "/proc/$p/status")"
  echo "guest-threads: $p $(cat /proc/"$p"/task/*/stat | awk '{ printf "%s", $3 }')"
done
line=$(grep COMPATRUN_TEST_STOP_MID_PATCH "$state/log" | head -n1)
tid=$(echo "$line" | sed -n 's/.*\[pid \([0-9]*\)\].*/\1/p')
at=$(echo "$line" | sed -n 's/.*call site at \(0x[0-9a-f]*\) .*/\1/p')
if [ -n "$tid" ] && [ -n "$at" ]; then
  echo "site-bytes:$(dd if="/proc/$tid/mem" bs=1 skip=$((at)) count=4 2>/dev/null | od -An -tx1)"
fi
sed 's/^/log-at-kill: /' "$state/log"

kill -9 "$pid"
wait "$pid"
echo "status: $?"

# Nothing goes on: poll up to 10 s for every compatrun and guest process to be gone.
n=0
while [ -n "$(watched)" ] && [ $n -lt 100 ]; do
  n=$((n + 1))
  usleep 100000
done
left=$(watched)
echo "left: ${left:-none}"
sed 's/^/out-after-kill: /' "$state/out"
rm -rf "$state"
after=$(snapshot | sort)
if [ "$before" = "$after" ]; then
  echo "changed: none"
else
  echo "$before" >/tmp/kill-mid-patch.before
  echo "$after" >/tmp/kill-mid-patch.after
  diff /tmp/kill-mid-patch.before /tmp/kill-mid-patch.after | sed 's/^/changed: /'
  rm -f /tmp/kill-mid-patch.before /tmp/kill-mid-patch.after
fi
if [ "$(md5sum <"$prog")" = "$sum" ]; then
  echo "file-unchanged: yes"
else
  echo "file-unchanged: no"
fi

# The next run, in the same boot, without the hook.
./compatrun --log info -k rhel6 -- "$@" >/tmp/kill-mid-patch.next 2>&1
echo "next-status: $?"
sed 's/^/next: /' /tmp/kill-mid-patch.next
rm -f /tmp/kill-mid-patch.next
