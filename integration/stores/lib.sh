# Shared by the emulator scripts (moto.sh, azurite.sh): bookkeeping of a server started for DIR,
# whose pid is in DIR/pid and whose endpoint is written to DIR/endpoint once it answers.
# The sourcing script defines `die` and `answers PROBE` (true once the server responds).

# True while the server started for DIR runs.
running() {
    local dir=$1
    [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null
}

# Waits up to 20 s for `answers PROBE`; then records and prints ENDPOINT. NAME and LOG are for
# the error message.
wait_until_answering() {
    local dir=$1 name=$2 endpoint=$3 probe=$4 log=$5
    for _ in $(seq 1 200); do
        if answers "$probe"; then
            echo "$endpoint" >"$dir/endpoint"
            echo "$endpoint"
            return 0
        fi
        running "$dir" || die "$name exited at start; see $log"
        sleep 0.1
    done
    stop "$dir"
    die "$name did not answer within 20 s; see $log"
}

# Stops the server started for DIR (TERM, then KILL after 5 s); succeeds when none runs.
stop() {
    local dir=$1
    [[ -f $dir/pid ]] || return 0
    local pid
    pid=$(cat "$dir/pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid" "$dir/endpoint"
}
