#!/usr/bin/env bash
# Front-proxy benchmark for lodge (a benchmark, not a test). Run as root:
#
#   bench/proxy.sh                       # build, set up, measure, clean up; report on stdout
#   RESULTS=/tmp/proxy.md bench/proxy.sh # also keep the report in a file
#
# wrk against three front servers, all in front of the SAME php-fpm pool (one lodge tenant,
# pm = static, max_children 8) and the same docroot:
#   - lodge's own proxy (hyper), started by `lodge serve` (the agent runs it as lodge-www);
#   - nginx: worker_processes auto, sendfile + tcp_nopush, open_file_cache, an upstream on the
#     pool's socket with `keepalive` sized to max_children and `fastcgi_keep_conn on`;
#   - Apache 2.4, event MPM, `SetHandler "proxy:unix:<sock>|fcgi://localhost/"` for .php with
#     a `<Proxy "fcgi://localhost/" enablereuse=on max=...>` worker, EnableSendfile On.
# Rows: PHP hello world, a 4 KiB static file, a 1 MiB static file; HTTP/1.1 keep-alive.
# For each: req/s and p99 of each server, and the ratios lodge/nginx and lodge/apache.
#
# The machine this was written on has 2 cores and wrk shares them with the server under test;
# every server gets the same wrk settings. See bench/README.md, section "Proxy".
#
# Every server writes an access log line per request in the combined format, as a hosting
# panel sets them up (lodge always does): nginx buffered (64 KiB, flushed every second),
# Apache with BufferedLogs. LOGS=0 turns nginx's and Apache's off (lodge's stays on).
#
# Environment: ROUNDS (1: runs per server and row, the median reported), DURATION (10 s per run), WARMUP (3 s, an unrecorded run before each), THREADS (2),
# CONNECTIONS (32), MAX_CHILDREN (8), NGINX_KEEPALIVE (max_children / nginx workers: the
# upstream keepalive cache is per worker process), APACHE_CONN_MAX (max_children / Apache
# processes: the connection pool is per child), PORT_LODGE/PORT_NGINX/PORT_APACHE
# (18080/18081/18082), UID_RANGE (43000-43099), SKIP_BUILD (0), FCGIBENCH (1: also measure the
# pool directly with ../shared/tools/fcgibench if it builds), WAIT_FOR (a file; measuring waits,
# at most WAIT_MAX seconds, until it has a line starting with EXIT, so that another job's
# load does not distort the figures; unset by default), RESULTS (unset), ONLY_SERVERS (e.g.
# "lodge nginx"), ONLY_ROWS (a part of a row's name, e.g. "4 KiB"), PROFILE (a path prefix:
# `perf record -g` of lodge's proxy during each of its measured runs, to <prefix>.<file>), HOLD
# (set: after set-up, wait until <base>/hold is removed, to look at the servers by hand).
# Needs: wrk, nginx, apache2 (Debian packages), php-fpm, curl, jq.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
MAX_CHILDREN=${MAX_CHILDREN:-8}
PORT_LODGE=${PORT_LODGE:-18080}
PORT_NGINX=${PORT_NGINX:-18081}
PORT_APACHE=${PORT_APACHE:-18082}
UID_RANGE=${UID_RANGE:-43000-43099}
SKIP_BUILD=${SKIP_BUILD:-0}
FCGIBENCH=${FCGIBENCH:-1}
WAIT_FOR=${WAIT_FOR:-}
WAIT_MAX=${WAIT_MAX:-1500}
RESULTS=${RESULTS:-}
LOGS=${LOGS:-1}
ROUNDS=${ROUNDS:-1}
TENANT=benchp
DOMAIN=bench.example
PASSWORD=admin-password-1
BASE=/tmp/lodge-bench-proxy-$$
NCPU=$(nproc)
NGINX_WORKERS=$NCPU
NGINX_KEEPALIVE=${NGINX_KEEPALIVE:-$(( MAX_CHILDREN / NGINX_WORKERS > 0 ? MAX_CHILDREN / NGINX_WORKERS : 1 ))}
APACHE_PROCS=2
APACHE_CONN_MAX=${APACHE_CONN_MAX:-$(( MAX_CHILDREN / APACHE_PROCS ))}

# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

[[ $EUID -eq 0 ]] || die "run as root (lodge's agent creates the tenant's user and php-fpm master)"
for tool in wrk nginx apache2 curl jq getent setsid; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y wrk nginx apache2 curl jq)"
done
for m in mpm_event proxy proxy_fcgi mime dir authz_core; do
    [[ -f /usr/lib/apache2/modules/mod_$m.so ]] || die "no mod_$m.so in /usr/lib/apache2/modules"
done
getent passwd "$TENANT" >/dev/null && die "user $TENANT exists already (a previous run?)"
for p in "$PORT_LODGE" "$PORT_NGINX" "$PORT_APACHE"; do
    ! ss -ltn "sport = :$p" | grep -q LISTEN || die "port $p is taken"
done

LODGE_PID= NGINX_PID= APACHE_PID= URL= TOKEN=

stop_pid() { # pid signal seconds
    local pid=$1 sig=$2 secs=$3
    [[ -n $pid ]] || return 0
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for _ in $(seq $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$pid ignored SIG$sig for $secs s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # nginx and Apache first: their kept connections hold php-fpm workers.
    [[ -n $NGINX_PID ]] && { log "cleanup: stopping nginx"; stop_pid "$NGINX_PID" QUIT 10; }
    [[ -n $APACHE_PID ]] && { log "cleanup: stopping apache"; stop_pid "$APACHE_PID" TERM 10; }
    if [[ -n $LODGE_PID ]] && kill -0 "$LODGE_PID" 2>/dev/null; then
        if [[ -n $TOKEN ]]; then
            log "cleanup: deleting tenant $TENANT through the API"
            curl -sS -o /dev/null -X DELETE -H "Authorization: Bearer $TOKEN" \
                "$URL/api/v1/tenants/$TENANT"
            for _ in $(seq 120); do
                getent passwd "$TENANT" >/dev/null || break
                sleep 0.5
            done
        fi
        log "cleanup: stopping lodge"
        stop_pid "$LODGE_PID" TERM 60
    fi
    if getent passwd "$TENANT" >/dev/null; then
        local uid
        uid=$(getent passwd "$TENANT" | cut -d: -f3)
        log "cleanup: the agent left user $TENANT (uid $uid): removing it"
        pkill -KILL -u "$uid" 2>/dev/null
        sleep 0.5
        userdel "$TENANT" 2>/dev/null
        getent group "$TENANT" >/dev/null && groupdel "$TENANT" 2>/dev/null
    fi
    for d in /sys/fs/cgroup/lodge/"$TENANT" /sys/fs/cgroup/*/lodge/"$TENANT"; do
        [[ -d $d ]] && rmdir "$d" 2>/dev/null
    done
    if (( rc != 0 )) && [[ -d $BASE ]]; then
        mkdir -p "$BASE.logs"
        cp "$BASE"/*.log "$BASE/lodge.stdout" "$BASE.logs/" 2>/dev/null
        log "logs kept in $BASE.logs"
    fi
    rm -rf "$BASE"
    (( rc == 0 )) || log "failed (exit $rc); cleaned up"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Build and start lodge with one tenant

if [[ $SKIP_BUILD != 1 ]]; then
    log "building (cargo build --release --bin lodge)"
    (cd "$ROOT" && cargo build --release --bin lodge)
fi
[[ -x $ROOT/target/release/lodge ]] || die "no target/release/lodge"
mkdir -m 0711 "$BASE"
# A private copy: a concurrent rebuild must not replace the binary the agent re-executes.
install -m 0755 "$ROOT/target/release/lodge" "$BASE/lodge"
LODGE=$BASE/lodge
RUN=$BASE/run
TENANTS_ROOT=$BASE/tenants
SOCK=$RUN/fpm/$TENANT.sock

FCGI=
if [[ $FCGIBENCH == 1 && -f $ROOT/../shared/tools/fcgibench/Cargo.toml ]] && command -v cargo >/dev/null; then
    log "building fcgibench (../shared/tools/fcgibench)"
    if cargo build -q --release --manifest-path "$ROOT/../shared/tools/fcgibench/Cargo.toml" \
        --target-dir /tmp/fcgibench >"$BASE/fcgibench-build.log" 2>&1; then
        FCGI=/tmp/fcgibench/release/fcgibench
    else
        log "fcgibench did not build; skipping it"
    fi
fi

echo "$PASSWORD" | LODGE_LOG=warn "$LODGE" --data-dir "$BASE/data" user add admin --role admin \
    --password-stdin >/dev/null
LODGE_LOG=warn NO_COLOR=1 setsid "$LODGE" --data-dir "$BASE/data" --run-dir "$RUN" \
    --tenants-root "$TENANTS_ROOT" --uid-range "$UID_RANGE" --panel-listen 127.0.0.1:0 \
    --http-listen "127.0.0.1:$PORT_LODGE" --https-listen off serve \
    >"$BASE/lodge.stdout" 2>"$BASE/lodge.log" </dev/null &
LODGE_PID=$!
for _ in $(seq 600); do
    URL=$(sed -n 's#^lodge panel listening on \(http://[^ /]*\).*#\1#p' "$BASE/lodge.stdout" | head -1)
    [[ -n $URL ]] && grep -q '^lodge proxy listening' "$BASE/lodge.stdout" && break
    kill -0 "$LODGE_PID" 2>/dev/null || { tail -20 "$BASE/lodge.log" >&2; die "lodge exited"; }
    sleep 0.1
done
[[ -n $URL ]] || die "the panel did not start within 60 s"
log "lodge up: panel $URL, proxy 127.0.0.1:$PORT_LODGE"

api() { # method path [json]
    local out code
    out=$(curl -sS -w '\n%{http_code}' -X "$1" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' ${3:+--data "$3"} "$URL/api/v1$2")
    code=${out##*$'\n'}
    [[ $code == 2* ]] || die "$1 $2 -> $code: ${out%$'\n'*}"
    printf '%s\n' "${out%$'\n'*}"
}
TOKEN=$(curl -sS -H 'Content-Type: application/json' \
    --data "{\"username\":\"admin\",\"password\":\"$PASSWORD\"}" "$URL/api/v1/tokens" | jq -r .token)
[[ -n $TOKEN && $TOKEN != null ]] || die "could not sign in"
api POST /plans "{\"name\":\"bench\",\"php\":{\"pm\":\"static\",\"max_children\":$MAX_CHILDREN}}" >/dev/null
api POST /tenants "{\"name\":\"$TENANT\",\"plan\":\"bench\"}" >/dev/null
api POST "/tenants/$TENANT/vhosts" "{\"domain\":\"$DOMAIN\"}" >/dev/null
for i in $(seq 240); do
    t=$(api GET "/tenants/$TENANT")
    [[ $(jq -r '.applied.state == "ok" and .applied.generation == .generation' <<<"$t") == true ]] && break
    (( i < 240 )) || die "tenant not applied after 120 s: $t"
    sleep 0.5
done
[[ -S $SOCK ]] || die "no pool socket at $SOCK"
log "tenant $TENANT applied (pool $SOCK)"

DOCROOT=$TENANTS_ROOT/$TENANT/sites/$DOMAIN/public
[[ -d $DOCROOT ]] || die "no docroot at $DOCROOT"
printf '<?php echo "hello";\n' >"$DOCROOT/hello.php"
head -c 4096 /dev/urandom >"$DOCROOT/4k.bin"
head -c 1048576 /dev/urandom >"$DOCROOT/1m.bin"
chown "$TENANT:lodge-www" "$DOCROOT"/{hello.php,4k.bin,1m.bin}
chmod 0640 "$DOCROOT"/{hello.php,4k.bin,1m.bin}

# ---------------------------------------------------------------------------------------------
# nginx and Apache, each from its own config, workers as lodge-www (the pool's socket is
# 0660 benchp:lodge-www and the files 0640 benchp:lodge-www, exactly what lodge's proxy gets)

mkdir -p "$BASE/nginx" "$BASE/apache"
cat >"$BASE/nginx/nginx.conf" <<EOF
user lodge-www lodge-www;
worker_processes $NGINX_WORKERS;
pid $BASE/nginx/nginx.pid;
error_log $BASE/nginx/error.log warn;
worker_rlimit_nofile 65536;
events {
    worker_connections 4096;
}
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
$(if [[ $LOGS == 1 ]]; then
    echo "    access_log $BASE/nginx/access.log combined buffer=64k flush=1s;"
else
    echo "    access_log off;"
fi)
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    open_file_cache max=1000 inactive=20s;
    open_file_cache_valid 30s;
    open_file_cache_min_uses 1;
    open_file_cache_errors on;
    client_body_temp_path $BASE/nginx/body;
    fastcgi_temp_path $BASE/nginx/fastcgi;
    proxy_temp_path $BASE/nginx/proxy;
    uwsgi_temp_path $BASE/nginx/uwsgi;
    scgi_temp_path $BASE/nginx/scgi;
    upstream php_$TENANT {
        server unix:$SOCK;
        # Per worker process: $NGINX_WORKERS workers x $NGINX_KEEPALIVE = max_children ($MAX_CHILDREN).
        keepalive $NGINX_KEEPALIVE;
        keepalive_requests 100000;
        keepalive_timeout 2s;
    }
    server {
        listen 127.0.0.1:$PORT_NGINX reuseport backlog=4096;
        server_name $DOMAIN;
        root $DOCROOT;
        index index.php index.html;
        location / {
            try_files \$uri \$uri/ =404;
        }
        location ~ \.php\$ {
            try_files \$uri =404;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
            fastcgi_pass php_$TENANT;
            fastcgi_keep_conn on;
            fastcgi_buffers 16 16k;
            fastcgi_buffer_size 32k;
        }
    }
}
EOF

M=/usr/lib/apache2/modules
cat >"$BASE/apache/httpd.conf" <<EOF
ServerRoot $BASE/apache
DefaultRuntimeDir $BASE/apache
PidFile $BASE/apache/httpd.pid
ErrorLog $BASE/apache/error.log
LogLevel warn
Mutex file:$BASE/apache default
LoadModule mpm_event_module $M/mod_mpm_event.so
LoadModule authz_core_module $M/mod_authz_core.so
LoadModule mime_module $M/mod_mime.so
LoadModule dir_module $M/mod_dir.so
LoadModule proxy_module $M/mod_proxy.so
LoadModule proxy_fcgi_module $M/mod_proxy_fcgi.so
User lodge-www
Group lodge-www
Listen 127.0.0.1:$PORT_APACHE
ServerName $DOMAIN
TypesConfig /etc/mime.types
# Event MPM: a fixed set of $APACHE_PROCS processes, 32 threads each, never reaped during a run.
StartServers $APACHE_PROCS
ServerLimit $APACHE_PROCS
ThreadsPerChild 32
ThreadLimit 32
MaxRequestWorkers $((APACHE_PROCS * 32))
MinSpareThreads 32
MaxSpareThreads $((APACHE_PROCS * 32))
MaxConnectionsPerChild 0
AsyncRequestWorkerFactor 2
KeepAlive On
KeepAliveTimeout 65
MaxKeepAliveRequests 0
EnableSendfile On
EnableMMAP On
FileETag MTime Size
HostnameLookups Off
$(if [[ $LOGS == 1 ]]; then
    echo "LogFormat \"%h %l %u %t \\\"%r\\\" %>s %O \\\"%{Referer}i\\\" \\\"%{User-Agent}i\\\"\" combined"
    echo "CustomLog $BASE/apache/access.log combined"
    echo "BufferedLogs On"
fi)
<Directory />
    AllowOverride None
    Require all denied
</Directory>
DocumentRoot $DOCROOT
<Directory $DOCROOT>
    AllowOverride None
    Options None
    Require all granted
</Directory>
DirectoryIndex index.php index.html
# Connection reuse to php-fpm; the pool is per child process: $APACHE_PROCS x $APACHE_CONN_MAX = max_children.
<Proxy "fcgi://localhost/" enablereuse=on max=$APACHE_CONN_MAX ttl=2>
</Proxy>
<FilesMatch "\.php\$">
    <If "-f %{REQUEST_FILENAME}">
        SetHandler "proxy:unix:$SOCK|fcgi://localhost/"
    </If>
</FilesMatch>
EOF

nginx -t -q -c "$BASE/nginx/nginx.conf" 2>"$BASE/nginx-test.log" || { cat "$BASE/nginx-test.log" >&2; die "nginx config"; }
setsid nginx -c "$BASE/nginx/nginx.conf" -g 'daemon off;' >"$BASE/nginx.log" 2>&1 </dev/null &
NGINX_PID=$!
apache2 -t -f "$BASE/apache/httpd.conf" >"$BASE/apache-test.log" 2>&1 || { cat "$BASE/apache-test.log" >&2; die "apache config"; }
setsid apache2 -f "$BASE/apache/httpd.conf" -DFOREGROUND >"$BASE/apache.log" 2>&1 </dev/null &
APACHE_PID=$!

port_of() {
    case $1 in lodge) echo "$PORT_LODGE" ;; nginx) echo "$PORT_NGINX" ;; apache) echo "$PORT_APACHE" ;; esac
}
read -r -a SERVERS <<<"${ONLY_SERVERS:-lodge nginx apache}"
ROWS=()
for row in "PHP hello world:/hello.php:5" "4 KiB static:/4k.bin:4096" "1 MiB static:/1m.bin:1048576"; do
    [[ -z ${ONLY_ROWS:-} || $row == *"${ONLY_ROWS}"* ]] && ROWS+=("$row")
done

# Every server answers every row with a 200 and the right body before anything is measured.
for s in "${SERVERS[@]}"; do
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$(port_of "$s")/" -H "Host: $DOMAIN" && break
        sleep 0.1
    done
    for row in "${ROWS[@]}"; do
        IFS=: read -r _ path size <<<"$row"
        got=$(curl -sS -o "$BASE/body" -w '%{http_code} %{size_download}' -H "Host: $DOMAIN" \
            "http://127.0.0.1:$(port_of "$s")$path")
        [[ $got == "200 $size" ]] || die "$s $path: got '$got', want '200 $size' ($(head -c 200 "$BASE/body"))"
        if [[ $path == /hello.php ]]; then
            [[ $(cat "$BASE/body") == hello ]] || die "$s $path did not run PHP: $(head -c 200 "$BASE/body")"
        else
            cmp -s "$BASE/body" "$DOCROOT${path}" || die "$s $path: body differs from the file"
        fi
    done
done
log "lodge :$PORT_LODGE, nginx :$PORT_NGINX, apache :$PORT_APACHE answer every row"

# ---------------------------------------------------------------------------------------------
# Measure

if [[ -n $WAIT_FOR ]]; then
    t0=$SECONDS
    waited_note=
    until grep -q '^EXIT' "$WAIT_FOR" 2>/dev/null; do
        if (( SECONDS - t0 >= WAIT_MAX )); then
            waited_note="measured while $WAIT_FOR had no EXIT line yet (waited $WAIT_MAX s)"
            log "$waited_note"
            break
        fi
        log "waiting for an EXIT line in $WAIT_FOR ($((SECONDS - t0)) s so far)"
        sleep 30
    done
    log "waited $((SECONDS - t0)) s for $WAIT_FOR"
fi

if [[ -n ${HOLD:-} ]]; then
    touch "$BASE/hold"
    log "holding: lodge :$PORT_LODGE, nginx :$PORT_NGINX, apache :$PORT_APACHE (Host: $DOMAIN); rm $BASE/hold to go on"
    while [[ -e $BASE/hold ]]; do sleep 1; done
fi

# Converts wrk's latency ("812.00us", "3.45ms", "1.02s") to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.2f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.2f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.2f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.2f", v * 1000 }
        else printf "?" }'
}

declare -A RPS P99 NOTE ALL
run_wrk() { # server path secs -> wrk output on stdout
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${3}s" --latency -H "Host: $DOMAIN" \
        "http://127.0.0.1:$(port_of "$1")$2"
}

# Apache's kept FastCGI connections (enablereuse) are closed only when its connection pool
# is used again, however old: once Apache has run PHP, they hold php-fpm's workers and the
# next server finds the pool taken. A restart (SIGHUP: the children exit, closing them) frees
# the workers; Apache is back when it answers again.
release_apache_workers() {
    kill -HUP "$APACHE_PID"
    local i
    for ((i = 0; i < 100; i++)); do
        sleep 0.1
        if curl -fsS -o /dev/null -H "Host: $DOMAIN" "http://127.0.0.1:$PORT_APACHE/4k.bin" 2>/dev/null; then
            return
        fi
    done
    die "apache did not come back after a restart"
}

# Rows outer, servers inner: the three servers of a row are measured minutes apart at most.
# With ROUNDS > 1 each row measures the servers in turn ROUNDS times, and the run with the
# median req/s of each server stands for it (this machine's figures vary by a tenth or more
# from one run to the next).
for row in "${ROWS[@]}"; do
    IFS=: read -r name path _ <<<"$row"
    declare -A RUNS=()
    for ((round = 1; round <= ROUNDS; round++)); do
        for s in "${SERVERS[@]}"; do
            # Kept FastCGI connections of the previous server (idle timeout 2 s for all three)
            # must be gone, or they would hold php-fpm workers.
            sleep 3
            run_wrk "$s" "$path" "$WARMUP" >/dev/null
            if [[ $s == lodge && -n ${PROFILE:-} && $round == 1 ]]; then
                proxy_pid=$(pgrep -u lodge-www -f 'lodge proxy$' | head -n 1)
                perf record -F 1999 -g -o "$PROFILE.$(basename "$path")" -p "$proxy_pid" -- sleep "$DURATION" \
                    >/dev/null 2>&1 &
                perf_pid=$!
            fi
            out=$(run_wrk "$s" "$path" "$DURATION")
            if [[ -n ${perf_pid:-} ]]; then wait "$perf_pid" || true; perf_pid=; fi
            printf '%s\n' "== $s $path (round $round)" "$out" >>"$BASE/wrk.log"
            rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
            p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
            errs=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | paste -sd';' || true)
            RUNS[$s]+="$rps $p99 ${errs// /_}"$'\n'
            log "$s $path (round $round): $rps req/s, p99 $p99 ms${errs:+ ($errs)}"
            if [[ $s == apache && $path == *.php ]]; then release_apache_workers; fi
        done
    done
    for s in "${SERVERS[@]}"; do
        # The median run by req/s (the upper one of an even count).
        read -r rps p99 errs < <(sort -n <<<"${RUNS[$s]%$'\n'}" | awk -v n="$ROUNDS" 'NR == int(n / 2) + 1')
        RPS[$s,$name]=$rps
        P99[$s,$name]=$p99
        if [[ -n $errs ]]; then NOTE[$s,$name]=${errs//_/ }; fi
        if ((ROUNDS > 1)); then
            ALL[$s,$name]=$(awk '{print $1}' <<<"${RUNS[$s]%$'\n'}" | paste -sd' ')
        fi
    done
    unset RUNS
done

FCGI_LINE=
if [[ -n $FCGI ]]; then
    sleep 3
    if FCGI_OUT=$("$FCGI" "$SOCK" "$DOCROOT/hello.php" 16 5 keepalive 2>&1); then
        FCGI_LINE=$(tail -n 3 <<<"$FCGI_OUT" | paste -sd' ')
        log "fcgibench: $FCGI_LINE"
    else
        log "fcgibench failed: $(tail -n 2 <<<"$FCGI_OUT")"
    fi
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "n/a" }'; }
{
    echo "lodge front proxy vs nginx $(nginx -v 2>&1 | sed 's#.*nginx/##') vs Apache $(apache2 -v | sed -n 's#.*Apache/\([^ ]*\).*#\1#p') (event MPM)"
    echo "same pool: php-fpm, pm=static, max_children=$MAX_CHILDREN; HTTP/1.1 keep-alive;" \
        "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency after a ${WARMUP} s warm-up"
    echo "machine: $NCPU cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))," \
        "$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r);" \
        "wrk runs on the same cores as the server"
    if [[ -n ${waited_note:-} ]]; then echo "note: $waited_note"; fi
    echo
    echo "| row | lodge req/s | lodge p99 | nginx req/s | nginx p99 | apache req/s | apache p99 | lodge/nginx | lodge/apache |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        IFS=: read -r name _ _ <<<"$row"
        # A server left out (ONLY_SERVERS) shows as "-".
        for s in lodge nginx apache; do
            : "${RPS[$s,$name]:=-}" "${P99[$s,$name]:=-}"
        done
        echo "| $name | ${RPS[lodge,$name]} | ${P99[lodge,$name]} ms | ${RPS[nginx,$name]} | ${P99[nginx,$name]} ms" \
            "| ${RPS[apache,$name]} | ${P99[apache,$name]} ms | $(ratio "${RPS[lodge,$name]}" "${RPS[nginx,$name]}")" \
            "| $(ratio "${RPS[lodge,$name]}" "${RPS[apache,$name]}") |"
    done
    for k in "${!NOTE[@]}"; do echo "note: ${k/,/ }: ${NOTE[$k]}"; done
    if ((ROUNDS > 1)); then
        echo
        echo "each figure is the median of $ROUNDS runs; all runs' req/s:"
        for row in "${ROWS[@]}"; do
            IFS=: read -r name _ _ <<<"$row"
            for s in "${SERVERS[@]}"; do echo "- $name, $s: ${ALL[$s,$name]}"; done
        done
    fi
    if [[ -n $FCGI_LINE ]]; then
        echo
        echo "fcgibench (the pool alone, no HTTP, 16 kept connections, 5 s): $FCGI_LINE"
    fi
} >"$BASE/report.md"
cat "$BASE/report.md"
if [[ -n $RESULTS ]]; then
    cp "$BASE/report.md" "$RESULTS"
    cp "$BASE/wrk.log" "${RESULTS%.md}.wrk.log"
fi
