#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, with accounting (slurmdbd + MariaDB), for the
# tests and for trying the slurm profile without a cluster. No systemd: every daemon is started here,
# its PID recorded, and `down` stops exactly those PIDs.
#
#   bash scripts/slurm.sh up      # install (Debian packages, if missing), configure, start, wait for idle
#   bash scripts/slurm.sh env     # print `export SLURM_CONF=...` (eval it in a shell to use the cluster)
#   bash scripts/slurm.sh down    # stop the daemons this script started
#   bash scripts/slurm.sh fail-node   # a node failure: SIGKILL slurmd and every job process on the node
#   bash scripts/slurm.sh start-node  # bring slurmd back after fail-node (the node returns to service)
#
# Everything lives in $F2D2_SLURM_DIR (default .slurm/ in the repository): slurm.conf, slurmdbd.conf,
# the MariaDB data, state, spool, logs, PID files and the cluster's own munged socket. Ports:
# $F2D2_SLURM_PORT_BASE +0 ctld, +1 slurmd, +2 slurmdbd, +3 MariaDB; without it `up` picks four free ones
# (written to $DIR/port), so that two clusters from two clones (two test runs) share one machine. The
# partition is named $F2D2_PARTITION (default "f2d2").
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$(realpath -m "${F2D2_SLURM_DIR:-.slurm}")"
PORT="${F2D2_SLURM_PORT_BASE:-}"
MUNGE_SOCKET="$DIR/run/munge.socket"
PARTITION="${F2D2_PARTITION:-f2d2}"
CLUSTER_NAME=f2d2
UP_TIMEOUT="${F2D2_SLURM_UP_TIMEOUT:-60}"
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)

log() { echo "[slurm] $*" >&2; }
die() { echo "[slurm] ERROR: $*" >&2; exit 1; }

install_packages() {
  local missing=()
  for cmd in slurmctld slurmd slurmdbd munged mariadbd sinfo sacct; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]} and not root: install ${PACKAGES[*]} yourself"
    sudo="sudo"
  fi
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

# Start a daemon that forks into the background and writes its PID to $2; fail naming its log.
started() {  # name pidfile logfile
  local name=$1 pidfile=$2 logfile=$3
  for _ in $(seq 1 50); do
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && return 0
    sleep 0.2
  done
  die "$name did not start; last lines of $logfile:
$(tail -n 20 "$logfile" 2>/dev/null)"
}

wait_for() {  # description timeout-seconds command...
  local what=$1 limit=$2; shift 2
  local t0=$SECONDS
  until "$@" >/dev/null 2>&1; do
    (( SECONDS - t0 >= limit )) && return 1
    sleep 0.5
  done
}

in_use() {  # port: is something on this machine bound to it?
  ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q . || (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Four consecutive free ports from 16817 + 4 k, k starting at a value of this process's PID, so that two
# clusters coming up at the same time start their search apart; none over $F2D2_SLURM_PORT_BASE when set.
pick_ports() {
  if [ -n "$PORT" ]; then
    return 0
  fi
  local k base p free
  for k in $(seq 0 499); do
    base=$((16817 + 4 * (($$ + k) % 500)))
    free=1
    for p in $base $((base + 1)) $((base + 2)) $((base + 3)); do
      if in_use "$p"; then free=0; break; fi
    done
    if [ "$free" = 1 ]; then PORT=$base; return 0; fi
  done
  die "no four consecutive free ports in 16817-18817; set F2D2_SLURM_PORT_BASE"
}

write_configs() {
  local host mem node
  host=$(hostname -s)
  node=$(slurmd -C | head -n 1)
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 9 / 10))/" <<<"$node")
  mkdir -p "$DIR"/{state,spool,log,run,mysql}
  cat >"$DIR/slurm.conf" <<EOF
# Written by scripts/slurm.sh: a single-node cluster on $host for f2d2's tests.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$host
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# this cluster's own munged; cred_expire also delays the restart of a requeued job (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
# with auth/munge this names the munged socket for talking to slurmdbd (sacctmgr, slurmctld); without it they
# use the machine's default socket, which need not exist
AccountingStoragePass=$MUNGE_SOCKET
JobRequeue=1
ReturnToService=2
MinJobAge=300
KillWait=5
# a node whose slurmd stops answering is marked down (its jobs NODE_FAIL, batch jobs requeued) after 10 s
SlurmdTimeout=10
InactiveLimit=0
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/slurmdbd.conf"
}

# The cluster's own munged on $MUNGE_SOCKET (the machine's key): another cluster's `down`, or the machine's own
# munged, never takes it away.
start_munge() {
  [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; }
  chmod 400 /etc/munge/munge.key
  munged --force --socket="$MUNGE_SOCKET" --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/run/munged.seed" --key-file=/etc/munge/munge.key
  started munged "$DIR/run/munged.pid" "$DIR/log/munged.log"
  wait_for munge 10 bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'" \
    || die "munged does not answer on $MUNGE_SOCKET (see $DIR/log/munged.log)"
}

start_mariadb() {
  local sock="$DIR/run/mysqld.sock"
  if [ ! -d "$DIR/mysql/mysql" ]; then
    mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
      >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $DIR/log/mariadb-install.log"
  fi
  mariadbd --user=root --datadir="$DIR/mysql" --socket="$sock" --port=$((PORT + 3)) --bind-address=127.0.0.1 \
    --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadbd.log" --skip-name-resolve \
    >/dev/null 2>&1 &
  started mariadbd "$DIR/run/mariadbd.pid" "$DIR/log/mariadbd.log"
  wait_for mariadb 30 mariadb-admin --socket="$sock" ping || die "MariaDB does not answer; see $DIR/log/mariadbd.log"
  mariadb --socket="$sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

up() {
  local t0=$SECONDS
  install_packages
  if [ -s "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
    die "a cluster from $DIR is already running (bash scripts/slurm.sh down first)"
  fi
  rm -f "$DIR"/run/*.pid "$DIR/run/munge.pidfile"
  pick_ports
  mkdir -p "$DIR"
  echo "$PORT" >"$DIR/port"
  write_configs
  export SLURM_CONF="$DIR/slurm.conf"
  start_munge
  start_mariadb
  slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
  started slurmdbd "$DIR/run/slurmdbd.pid" "$DIR/log/slurmdbd.log"
  wait_for slurmdbd 30 sacctmgr -n list cluster || die "slurmdbd does not answer; last lines of $DIR/log/slurmdbd.log:
$(tail -n 20 "$DIR/log/slurmdbd.log" 2>/dev/null)"
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER_NAME" \
    || sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null
  slurmctld
  started slurmctld "$DIR/run/slurmctld.pid" "$DIR/log/slurmctld.log"
  slurmd
  started slurmd "$DIR/run/slurmd.pid" "$DIR/log/slurmd.log"
  if ! wait_for "idle node" "$UP_TIMEOUT" bash -c '[ "$(sinfo -h -o %t)" = idle ]'; then
    die "the node is not idle after ${UP_TIMEOUT}s: sinfo says '$(sinfo -h -o '%t %E' 2>&1)'; see $DIR/log/"
  fi
  log "cluster up in $((SECONDS - t0))s: $(sinfo --version), partition $PARTITION, ports $PORT-$((PORT + 3));" \
    "SLURM_CONF=$SLURM_CONF"
}

# What a node failure looks like to SLURM: slurmd and every process of the node's jobs (the ones slurmd lists,
# and their slurmstepd) die at once; the controller marks the node down once slurmd stops answering.
fail_node() {
  export SLURM_CONF="$DIR/slurm.conf"
  [ -s "$DIR/run/slurmd.pid" ] || die "no slurmd from $DIR is running"
  local pids=() pid parent
  for pid in $(scontrol listpids 2>/dev/null | awk 'NR > 1 { print $1 }' | sort -u); do
    pids+=("$pid")
    parent=$(awk '{ print $4 }' "/proc/$pid/stat" 2>/dev/null) || continue
    [ "$(cat "/proc/$parent/comm" 2>/dev/null)" = slurmstepd ] && pids+=("$parent")
  done
  pids+=("$(cat "$DIR/run/slurmd.pid")")
  # frozen first, then killed: no slurmstepd is left to report its job's end to the controller (which would record
  # the job FAILED rather than NODE_FAIL)
  kill -STOP "${pids[@]}" 2>/dev/null || true
  kill -9 "${pids[@]}" 2>/dev/null || true
  rm -f "$DIR/run/slurmd.pid"
  log "node failed: killed slurmd and $((${#pids[@]} - 1)) job processes"
}

start_node() {
  export SLURM_CONF="$DIR/slurm.conf"
  slurmd
  started slurmd "$DIR/run/slurmd.pid" "$DIR/log/slurmd.log"
  log "slurmd started again"
}

down() {
  local name pidfile pid
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pidfile="$DIR/run/$name.pid"
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  log "stopped the daemons started from $DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  fail-node) fail_node ;;
  start-node) start_node ;;
  env) echo "export SLURM_CONF=$DIR/slurm.conf F2D2_PARTITION=$PARTITION" ;;
  *) echo "usage: bash scripts/slurm.sh up|down|env|fail-node|start-node" >&2; exit 2 ;;
esac
