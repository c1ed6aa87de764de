#!/usr/bin/env bash
# A private single-node Slurm cluster (slurmctld + slurmd + munge) with sifguard's
# PrologSlurmctld, TaskProlog and SPANK hook enabled, and sifguard's verified image store
# ($D/store) served by a stager on $D/run/stager.sock, for the integration tests.
#   tests/slurm/cluster.sh up --policy FILE   -> prints `export SLURM_CONF=…` and
#                                                `export SIFGUARD_REAL_APPTAINER=…`
#   tests/slurm/cluster.sh down               -> ends every process it started, by PID
# Needs root. Installs Debian's slurm-wlm, munge, libslurm-dev and gcc when missing.
# Apptainer is not installable here: the "real" runtime is a stand-in that records its
# argv, checks its image operand is a SIF, and for `exec IMAGE CMD…` runs CMD on the host.
set -euo pipefail
D=${SIFGUARD_CLUSTER_DIR:-/var/tmp/sifguard-cluster}
VENV=${SIFGUARD_CLUSTER_VENV:-/opt/sifguard-cluster-venv}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PORT_CTLD=${SIFGUARD_CLUSTER_PORT:-16817}
PORT_D=$((PORT_CTLD + 1))
say() { echo "cluster: $*" >&2; }

stop_pid() {  # stop_pid PID: TERM, wait up to 5 s, then KILL
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

down() {
  if [ -f "$D/etc/slurm.conf" ] && [ -f "$D/run/slurmctld.pid" ]; then
    SLURM_CONF=$D/etc/slurm.conf timeout 5 scancel --quiet --user=nobody 2>/dev/null || true
  fi
  # job steps outlive slurmd: end every slurmstepd (and its tasks) this cluster's slurmd spawned
  for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -q "^SLURM_CONF=$D/" \
       || [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$D/spool" ]; then
      for child in $(pgrep -P "$pid" 2>/dev/null || true); do stop_pid "$child"; done
      stop_pid "$pid"
    fi
  done
  for name in slurmd slurmctld munged stager; do
    [ -f "$D/run/$name.pid" ] && stop_pid "$(cat "$D/run/$name.pid")"
    rm -f "$D/run/$name.pid"
  done
  return 0
}

need_packages() {
  local missing=()
  for p in slurm-wlm munge libslurm-dev gcc python3-venv; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

python_for_jobs() {
  # The hooks and the shim run as job users too: they need a Python every user can
  # execute, so sifguard goes into a venv made from Debian's python3 (not a 0700 home).
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    /usr/bin/python3 -m venv "$VENV"
  fi
  # the package afresh, then whatever of its declared dependencies (setup.cfg) is missing
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$REPO" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "$REPO" >&2
  chmod -R a+rX "$VENV"
}

up() {
  local policy=""
  while [ $# -gt 0 ]; do
    case $1 in --policy) policy=$(readlink -f "$2"); shift 2 ;; *) say "unknown argument $1"; exit 2 ;; esac
  done
  [ -n "$policy" ] && [ -r "$policy" ] || { say "usage: $0 up --policy FILE"; exit 2; }
  [ "$(id -u)" = 0 ] || { say "must run as root"; exit 2; }
  need_packages
  down
  rm -rf "$D"
  mkdir -p "$D"/{etc,state,spool,log,run,munge,hooks,bin}
  chmod 755 "$D" "$D"/{etc,bin,hooks,run,munge}
  chmod 700 "$D"/{state,spool,log}
  python_for_jobs

  # munge with a private key and socket
  mungekey --create --keyfile="$D/munge/munge.key" --force >/dev/null 2>&1 \
    || dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 2>/dev/null
  chmod 400 "$D/munge/munge.key"
  munged --force --socket="$D/munge/munge.socket.2" --key-file="$D/munge/munge.key" \
    --pid-file="$D/run/munged.pid" --log-file="$D/log/munged.log" --seed-file="$D/munge/munged.seed"

  # the stand-in runtime (named apptainer, like the real one)
  : > "$D/standin.log"; chmod 666 "$D/standin.log"
  cat > "$D/bin/apptainer" <<STANDIN
#!/bin/bash
# Stand-in for Apptainer (not installable here): records argv, refuses a non-SIF image,
# and for \`exec IMAGE CMD...\` runs CMD on the host.
LOG=$D/standin.log
printf '%s uid=%s argv:' "\$(date +%s.%N)" "\$(id -u)" >> "\$LOG"; printf ' %q' "\$0" "\$@" >> "\$LOG"; echo >> "\$LOG"
while [[ \$# -gt 0 && \$1 == -* ]]; do case \$1 in --version) echo "apptainer version 0.0-standin"; exit 0;; -c|--config) shift 2;; *) shift;; esac; done
cmd=\${1:-help}; shift || true
case \$cmd in
  exec|run|shell|test|inspect)
    while [[ \$# -gt 0 && \$1 == -* ]]; do
      case \$1 in --) shift; break;; -B|--bind|-H|--home|-o|--overlay|-W|--workdir|--env|--pwd|--app|--mount) shift 2;; *) shift;; esac
    done
    img=\$1; shift || true
    [ "\$(head -c 41 "\$img" 2>/dev/null | tail -c 9)" = SIF_MAGIC ] || { echo "apptainer(stand-in): \$img is not a SIF image" >&2; exit 255; }
    echo "image \$img sha256=\$(sha256sum < "\$img" | cut -d' ' -f1)" >> "\$LOG"
    case \$cmd in exec) exec "\$@";; run) echo "stand-in: ran \$img";; esac ;;
  version) echo "apptainer version 0.0-standin" ;;
  *) echo "apptainer(stand-in): \$cmd" ;;
esac
STANDIN
  chmod 755 "$D/bin/apptainer"

  # the verified image store and its stager (root), which the hooks use
  mkdir -p "$D/store"; chmod 755 "$D/store"
  setsid "$VENV/bin/python" -m sifguard store serve --store "$D/store" --socket "$D/run/stager.sock" \
    </dev/null >/dev/null 2>"$D/log/stager.log" &
  echo $! > "$D/run/stager.pid"
  for _ in $(seq 100); do [ -S "$D/run/stager.sock" ] && break; sleep 0.1; done
  [ -S "$D/run/stager.sock" ] || { say "stager did not start; see $D/log/stager.log"; tail -5 "$D/log/stager.log" >&2; exit 1; }

  "$VENV/bin/python" -m sifguard slurm install --prefix "$D/hooks" --policy "$policy" \
    --slurm-conf "$D/etc/slurm.conf" --apptainer "$D/bin/apptainer" --singularity "$D/bin/apptainer" \
    --state-dir "$D/state" --python "$VENV/bin/python" \
    --store "$D/store" --stager-socket "$D/run/stager.sock" >"$D/log/install.log"

  cat > "$D/etc/slurm.conf" <<CONF
ClusterName=sifguardtest
SlurmctldHost=localhost
SlurmctldPort=$PORT_CTLD
SlurmdPort=$PORT_D
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SchedulerParameters=batch_sched_delay=0
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
PlugStackConfig=$D/etc/plugstack.conf
$(grep -E '^(PrologSlurmctld|TaskProlog)=' "$D/log/install.log")
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  grep -E '^required ' "$D/log/install.log" > "$D/etc/plugstack.conf"
  chmod 644 "$D/etc/slurm.conf" "$D/etc/plugstack.conf"
  # a client configuration with sifguard's submit-time filter (cli_filter/lua reads
  # cli_filter.lua next to the slurm.conf it uses); the plain one is a client without it
  mkdir -p "$D/etc-client"
  { cat "$D/etc/slurm.conf"; grep -E '^CliFilterPlugins=' "$D/log/install.log"; } > "$D/etc-client/slurm.conf"
  install -m 0644 "$D/hooks/cli_filter.lua" "$D/etc-client/cli_filter.lua"
  chmod 755 "$D/etc-client"; chmod 644 "$D/etc-client/slurm.conf"

  slurmctld -f "$D/etc/slurm.conf"
  slurmd -f "$D/etc/slurm.conf" -N localhost
  export SLURM_CONF=$D/etc/slurm.conf
  for _ in $(seq 150); do
    st=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
    [ "$st" = idle ] && break
    sleep 0.2
  done
  [ "$st" = idle ] || { say "node did not become idle (state '$st'); see $D/log"; tail -5 "$D/log/slurmctld.log" >&2; exit 1; }
  echo "export SLURM_CONF=$D/etc/slurm.conf"
  echo "export SIFGUARD_REAL_APPTAINER=$D/bin/apptainer"
  echo "export SIFGUARD_CLUSTER_DIR=$D"
  echo "export SIFGUARD_CLIENT_SLURM_CONF=$D/etc-client/slurm.conf"
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  *) echo "usage: $0 up --policy FILE | down" >&2; exit 2 ;;
esac
