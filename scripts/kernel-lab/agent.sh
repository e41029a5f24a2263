#!/usr/bin/env bash
# agent.sh DIR - run inside a kernel-lab guest: executes the shell scripts a test writes as
# DIR/cmd.N (N = 0, 1, ...), one at a time, in order, each with its stdout, stderr and exit
# status in DIR/out.N, DIR/err.N and DIR/status.N (written last); stops when DIR/stop
# appears. A script whose first line is `# limit=S` is killed after S seconds (status 124,
# and the tail of the kernel log appended to its stderr). DIR must be a --share directory (live on both sides). Lets one booted guest
# serve a whole test file (tests/src/kernel_lab.rs, Guest).
set -u
dir=$1
n=0
: >"$dir/ready"
while [ ! -e "$dir/stop" ]; do
    if [ -e "$dir/cmd.$n" ]; then
        limit=$(sed -n '1s/^# limit=\([0-9][0-9]*\)$/\1/p' "$dir/cmd.$n")
        timeout --kill-after=5 "${limit:-3600}" bash "$dir/cmd.$n" >"$dir/out.$n" 2>"$dir/err.$n" </dev/null
        status=$?
        if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
            { echo "agent: killed after ${limit:-3600} s; kernel log:"; dmesg | tail -n 30; } >>"$dir/err.$n"
        fi
        printf '%s\n' "$status" >"$dir/status.$n.tmp"
        mv -f "$dir/status.$n.tmp" "$dir/status.$n"
        n=$((n + 1))
    else
        sleep 0.05
    fi
done
