#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the real-cluster tests (tests/test_slurm_cluster.py)
# and for trying a `hydra/launcher=slurm` sweep by hand:
#
#   sudo scripts/slurm_cluster.sh start     # installs slurm-wlm, slurmdbd, munge, mariadb-server (apt)
#                                           # if missing, starts the daemons, prints `export SLURM_CONF=...`
#   scripts/slurm_cluster.sh status         # exit 0 when the node takes jobs
#   sudo scripts/slurm_cluster.sh stop      # stops the daemons (none is left) and removes the dir
#
# Everything lives under $TTSCALE_SLURM_DIR (default ${TMPDIR:-/tmp}/ttscale-slurm): the munge key
# and socket, slurm.conf, the state and spool dirs, the logs. Nothing in /etc is changed, so the
# clients need SLURM_CONF=$TTSCALE_SLURM_DIR/slurm.conf (the tests find it there by themselves).
# The node is this host as `slurmd -C` sees it (its CPUs and memory), no GPUs. Daemons and jobs run
# as root (SlurmUser=root); cgroups are not used (proctrack/linuxproc, task/none), so it runs in a
# container. Accounting is real, as submitit needs it (it polls `sacct` for the state of a job that
# wrote no result): slurmdbd over a private MariaDB server (socket and data under the same dir).
set -euo pipefail

DIR=${TTSCALE_SLURM_DIR:-${TMPDIR:-/tmp}/ttscale-slurm}
PORT=${TTSCALE_SLURM_PORT:-6817}   # slurmctld; slurmd, slurmdbd and MariaDB listen on PORT+1..3
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket
export SLURM_CONF=$CONF

log() { echo "slurm_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

install_packages() {
    local cmd
    for cmd in munged slurmctld slurmd slurmdbd sbatch mariadbd; do
        command -v "$cmd" >/dev/null || break
        [ "$cmd" = mariadbd ] && return 0
    done
    [ "$(id -u)" = 0 ] || die "slurm-wlm, slurmdbd, munge and mariadb-server are not all installed; run as root to install them (apt)"
    log "installing slurm-wlm, slurmdbd, munge, mariadb-server (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # the packages' post-install scripts would start the system's own daemons: not here
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
    fi
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server >/dev/null
    if [ -n "$policy" ]; then rm -f "$policy"; fi
}

pid_alive() { # (not kill -0: a user may not signal root's daemons)
    local pid
    pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && [ -d "/proc/$pid" ]
}

node_ready() {  # the node is up and takes jobs
    local state
    state=$(timeout 10 sinfo -h -N -o %t 2>/dev/null | head -1) || return 1
    case $state in idle | mix | alloc) return 0 ;; *) return 1 ;; esac
}

status() {
    [ -f "$CONF" ] || { log "not running (no $CONF)"; return 1; }
    local d
    for d in munged mariadbd slurmdbd slurmctld slurmd; do
        pid_alive "$DIR/run/$d.pid" || { log "$d is not running"; return 1; }
    done
    node_ready || { log "the node does not take jobs: $(sinfo -h -N -o '%N %t %E' 2>&1 | head -1)"; return 1; }
    log "up: $(sinfo -h -N -o 'node %N, %c CPUs, %m MB, state %t' | head -1); SLURM_CONF=$CONF"
}

write_conf() {
    local host node
    host=$(hostname -s)
    # e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
    node=$(slurmd -C | head -1)
    [[ $node == "NodeName=$host "* ]] || die "slurmd -C says '$node', expected NodeName=$host"
    cat >"$DIR/slurmdbd.conf" <<EOF
# written by scripts/slurm_cluster.sh (slurmdbd reads it from SLURM_CONF's directory)
AuthType=auth/munge
AuthInfo=socket=$SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=ttscale
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"
    cat >"$CONF" <<EOF
# written by scripts/slurm_cluster.sh: a one-node cluster on $host
ClusterName=ttscale
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job starts again after this many seconds (default 120)
AuthInfo=socket=$SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups (containers): processes tracked through /proc, no CPU binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
# the munge socket slurmdbd is reached through
AccountingStoragePass=$SOCKET
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
# a finished job stays in squeue / scontrol for MinJobAge seconds (sacct keeps it for good)
MinJobAge=30
KillWait=5
InactiveLimit=0
MessageTimeout=10
SlurmdTimeout=60
$node State=UNKNOWN NodeAddr=127.0.0.1
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_database() {  # a private MariaDB for slurmdbd: TCP on 127.0.0.1 only, data under $DIR/db
    mariadb-install-db --no-defaults --datadir="$DIR/db" --user=root --auth-root-authentication-method=normal \
        --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
        || die "mariadb-install-db failed: $(tail -5 "$DIR/log/mariadb-install.log")"
    mariadbd --no-defaults --datadir="$DIR/db" --user=root --socket="$DIR/run/mariadb.sock" \
        --pid-file="$DIR/run/mariadbd.pid" --bind-address=127.0.0.1 --port=$((PORT + 3)) --skip-name-resolve \
        --log-error="$DIR/log/mariadbd.log" --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
        </dev/null >/dev/null 2>&1 &
    local i sql=(mariadb --no-defaults -S "$DIR/run/mariadb.sock" -u root)
    for i in $(seq 1 60); do
        "${sql[@]}" -e "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.5
    done
    "${sql[@]}" -e "CREATE DATABASE slurm_acct_db; CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'ttscale';
                    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
        || die "MariaDB did not start: $(tail -5 "$DIR/log/mariadbd.log")"
}

start() {
    install_packages
    if status 2>/dev/null; then
        status
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "start the cluster as root (its daemons run as root)"
    stop_daemons
    rm -rf "$DIR"
    mkdir -p "$DIR"/{munge,state,spool,log,run,db}
    chmod 755 "$DIR"
    chmod 711 "$DIR/munge"
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
    munged --force --key-file="$DIR/munge/munge.key" --socket="$SOCKET" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start: $(tail -3 "$DIR/log/munged.log" 2>/dev/null)"
    write_conf
    start_database
    slurmdbd || die "slurmdbd did not start: $(tail -5 "$DIR/log/slurmdbd.log")"
    local i
    for i in $(seq 1 60); do # slurmdbd creates its tables, then listens
        timeout 10 sacctmgr -i -n add cluster ttscale >/dev/null 2>&1 && break
        sleep 0.5
    done
    timeout 10 sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx ttscale \
        || die "slurmdbd does not answer: $(tail -5 "$DIR/log/slurmdbd.log")"
    slurmctld -i || die "slurmctld did not start: $(tail -5 "$DIR/log/slurmctld.log")"
    slurmd || die "slurmd did not start: $(tail -5 "$DIR/log/slurmd.log")"
    for i in $(seq 1 60); do
        node_ready && break
        sleep 0.5
    done
    chmod a+r "$DIR"/run/*.pid
    status || { tail -n 5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2; die "the cluster did not come up"; }
    echo "export SLURM_CONF=$CONF"
}

stop_pids() { # stop_pids NAME...: SIGTERM to each daemon, wait for all, SIGKILL after 15 s
    local pids=() d pid i
    for d in "$@"; do
        pid_alive "$DIR/run/$d.pid" || continue
        pid=$(cat "$DIR/run/$d.pid")
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    done
    for i in $(seq 1 150); do
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && break; pid=""; done
        [ -z "${pid:-}" ] && return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        log "process $pid ($(cat /proc/"$pid"/comm 2>/dev/null)) ignored SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    done
}

stop_daemons() {
    [ -d "$DIR/run" ] || return 0
    if [ -f "$CONF" ] && pid_alive "$DIR/run/slurmctld.pid"; then
        timeout 10 scancel --quiet --user=root 2>/dev/null || true # the jobs still queued or running
        local i
        for i in $(seq 1 40); do
            [ -z "$(timeout 10 squeue -h -t R,CG -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    stop_pids slurmd slurmctld          # slurmctld hands its last records to slurmdbd
    stop_pids slurmdbd mariadbd munged
}

stop() {
    stop_daemons
    rm -rf "$DIR"
    log "stopped"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    install) install_packages ;;
    *)
        echo "usage: $0 start|stop|status|install" >&2
        exit 2
        ;;
esac
