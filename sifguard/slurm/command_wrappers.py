"""Commands that run another command: which words they take for themselves (pure).

`unwrap(argv)` peels launchers and wrappers — srun, mpirun/mpiexec/prun (every `:`
context), env, command, exec, time, nohup, nice, timeout, stdbuf, taskset, numactl,
chrt, ionice, xargs, find -exec — and returns the command(s) that finally run, or a
`Deferred` when it cannot tell for certain: an option it does not know (it might take a
value, and then the next word is not the command), a word known only at run time where
an option or the command is expected, an argument file (`--multi-prog`, `--app`). The
option tables are data recorded from each tool's documented interface.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from sifguard.slurm.shell_words import Dyn


@dataclass
class Step:
    argv: list                        # str | Dyn; argv[0] is the program as written
    chdir: list = field(default_factory=list)     # directories changed into on the way (str | Dyn)
    via: list = field(default_factory=list)       # wrappers peeled, outermost first
    bypass_functions: bool = False    # `command`/`exec`/a launcher: a shell function is not called
    cwd_unknown: bool = False         # find -execdir: runs in each match's directory
    more_args: bool = False           # xargs: arguments are appended from its input
    external: bool = False            # run by a program (env, srun …): shell builtins are not available
    path_changed: bool = False        # env -i / env PATH=…: the program is not looked up in the job's PATH
    env_changed: bool = False         # env NAME=…/-u/-i, a launcher (srun --export, mpirun -x): the child's
                                      # environment is not the script's


@dataclass
class Deferred:
    note: str


@dataclass(frozen=True)
class Spec:
    """getopt-style option table. short_*: option letters; long_*: names with `--`;
    single: single-dash long options (MPI launchers) with their number of values."""
    short_value: str = ""
    short_flag: str = ""
    short_optional: str = ""
    long_value: frozenset = frozenset()
    long_flag: frozenset = frozenset()
    long_optional: frozenset = frozenset()
    single: dict = field(default_factory=dict)
    no_command: frozenset = frozenset()     # options after which nothing is run (--help, -p PID)
    defer: frozenset = frozenset()          # options whose meaning the scanner does not follow


def _fs(s: str) -> frozenset:
    return frozenset(s.split())


SRUN = Spec(
    short_value="ABbcCdDeGiJLmMnNopqrSTtWwx",
    short_flag="EHlOQsuvXZh",
    short_optional="IkK",
    long_value=_fs("""--account --acctg-freq --bb --bbf --begin --bcast-exclude --chdir --cluster-constraint
        --clusters --comment --constraint --container --container-id --context --core-spec --cores-per-socket
        --cpu-bind --cpu-freq --cpus-per-gpu --cpus-per-task --deadline --delay-boot --dependency --distribution
        --epilog --error --exclude --export --extra-node-info --gid --gpu-bind --gpu-freq --gpus --gpus-per-node
        --gpus-per-socket --gpus-per-task --gres --gres-flags --het-group --hint --input --job-name --jobid
        --licenses --mail-type --mail-user --mcs-label --mem --mem-bind --mem-per-cpu --mem-per-gpu --mincpus
        --mpi --network --nodefile --nodelist --nodes --ntasks --ntasks-per-core --ntasks-per-gpu
        --ntasks-per-node --ntasks-per-socket --open-mode --output --partition --power --prefer --priority
        --profile --prolog --qos --relative --reservation --segment --signal --slurmd-debug --sockets-per-node
        --switches --task-epilog --task-prolog --thread-spec --threads --threads-per-core --time --time-min
        --tmp --tres-bind --tres-per-task --uid --wait --wckey --stepmgr --oom-kill-step"""),
    long_flag=_fs("""--contiguous --disable-status --exact --external-launcher --hold --label --no-allocate
        --overcommit --overlap --oversubscribe --preserve-env --pty --quiet --quit-on-interrupt --reboot
        --spread-job --unbuffered --use-min-nodes --verbose --whole"""),
    long_optional=_fs("""--bcast --compress --exclusive --immediate --kill-on-bad-exit --nice --no-kill
        --propagate --resv-ports --send-libs --x11 --cpu-freq"""),
    no_command=_fs("-h --help --usage -V --version --test-only"),
    defer=_fs("--multi-prog --container --container-id"),
)

# Open MPI mpirun/mpiexec/prun (PRRTE) and MPICH/Intel Hydra mpiexec: mostly single-dash long options.
_MPI1 = """-n -np -c -N -H -host --host -hosts -hostfile --hostfile -machinefile --machinefile -f -map-by --map-by
    -bind-to --bind-to -rank-by --rank-by -x -ppn -npernode --npernode -perhost -wdir --wdir -wd --wd -path --path
    -prefix --prefix -output-filename --output-filename -cpus-per-proc --cpus-per-proc -cpus-per-rank
    --cpus-per-rank -launcher -iface -rmk -demux -genvlist -envlist -am --am -tune --tune --personality
    -output --output -timeout --timeout -bootstrap -bootstrap-exec -launcher-exec -nameserver -errfile-pattern
    -outfile-pattern -gpus-per-proc -hostlist -rankfile --rankfile -display --display"""
_MPI2 = "-mca --mca -gmca --gmca -genv -env --pmixmca -pmixmca --prtemca -prtemca"
_MPI0 = """-v --verbose -q --quiet --oversubscribe -oversubscribe --report-bindings -report-bindings --display-map
    -display-map --allow-run-as-root -allow-run-as-root --tag-output -tag-output --timestamp-output
    -timestamp-output --merge-stderr-to-stdout -merge-stderr-to-stdout --use-hwthread-cpus -use-hwthread-cpus
    -genvall -genvnone -envall -envnone -l -prepend-rank -print-rank-map -print-all-exitcodes --noprefix
    --nolocal -nolocal --no-oversubscribe -no-oversubscribe -s -disable-x -enable-x --bynode --byslot -bynode
    -byslot --mpi-preload-binary --preload-binary"""
MPI = Spec(single={**{k: 1 for k in _MPI1.split()}, **{k: 2 for k in _MPI2.split()},
                   **{k: 0 for k in _MPI0.split()}},
           no_command=_fs("-h --help -help -V --version -version -info -show"),
           defer=_fs("--app -app -configfile --configfile -p --parsable"))

ENV = Spec(short_value="uCS", short_flag="iv0", long_value=_fs("--unset --chdir --split-string"),
           long_flag=_fs("--ignore-environment --null --debug --list-signal-handling"),
           long_optional=_fs("--block-signal --default-signal --ignore-signal"),
           no_command=_fs("--help --version"))
NICE = Spec(short_value="n", long_value=_fs("--adjustment"), no_command=_fs("--help --version"))
TIMEOUT = Spec(short_value="sk", short_flag="vf", long_value=_fs("--signal --kill-after"),
               long_flag=_fs("--foreground --preserve-status --verbose"), no_command=_fs("--help --version"))
STDBUF = Spec(short_value="ioe", long_value=_fs("--input --output --error"), no_command=_fs("--help --version"))
TASKSET = Spec(short_flag="ac", long_flag=_fs("--all-tasks --cpu-list"),
               no_command=_fs("-p --pid -h --help -V --version"))
NUMACTL = Spec(short_value="CmNipPw", short_flag="lab",
               long_value=_fs("--physcpubind --membind --cpunodebind --interleave --preferred --preferred-many "
                              "--weighted-interleave"),
               long_flag=_fs("--localalloc --all --balancing"),
               no_command=_fs("-s --show -H --hardware --help"))
CHRT = Spec(short_value="TPD", short_flag="abdfimorRv",
            long_value=_fs("--sched-runtime --sched-period --sched-deadline"),
            long_flag=_fs("--all-tasks --batch --deadline --fifo --idle --other --rr --reset-on-fork --verbose"),
            no_command=_fs("-p --pid -m --max -h --help -V --version"))
IONICE = Spec(short_value="cn", short_flag="t", long_value=_fs("--class --classdata"), long_flag=_fs("--ignore"),
              no_command=_fs("-p --pid -P --pgid -u --uid -h --help -V --version"))
TIME = Spec(short_value="fo", short_flag="apvq",
            long_value=_fs("--format --output"), long_flag=_fs("--append --portability --verbose --quiet"),
            no_command=_fs("--help --version"))
XARGS = Spec(short_value="adEILnPs", short_flag="0prtx", short_optional="eil",
             long_value=_fs("--arg-file --delimiter --max-args --max-procs --max-chars --process-slot-var"),
             long_flag=_fs("--null --no-run-if-empty --interactive --verbose --exit --open-tty"),
             long_optional=_fs("--eof --replace --max-lines"),
             no_command=_fs("--help --version --show-limits"))

NOARG = {"nohup", "unbuffer", "builtin"}
SHELL_BUILTINS = {"command", "exec", "builtin", "eval", "source", ".", "trap"}
LAUNCHERS = {"srun": SRUN, "mpirun": MPI, "mpiexec": MPI, "prun": MPI, "mpiexec.hydra": MPI, "orterun": MPI}
WRAPPERS = {"env": ENV, "nice": NICE, "timeout": TIMEOUT, "stdbuf": STDBUF, "taskset": TASKSET,
            "numactl": NUMACTL, "chrt": CHRT, "ionice": IONICE, "time": TIME, "xargs": XARGS}
# how many operands the wrapper takes before the command (timeout DURATION, taskset MASK, chrt PRIORITY)
OPERANDS = {"timeout": 1, "taskset": 1, "chrt": 1}
ALL_NAMES = set(LAUNCHERS) | set(WRAPPERS) | NOARG | {"command", "exec", "find"}

_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class _Stop(Exception):
    pass


def _options(argv: list, i: int, spec: Spec, seen: list | None = None) -> int:
    """Index of the first operand at or after i; raises _Stop(note | None)."""
    while i < len(argv):
        a = argv[i]
        if isinstance(a, Dyn):
            raise _Stop(f"{a.raw} is computed at run time where an option or the command is expected")
        if a == "--":
            return i + 1
        if not a.startswith("-") or a == "-":
            return i
        name, eq, _ = a.partition("=")
        if seen is not None:
            seen.append((a, argv[i + 1] if i + 1 < len(argv) else None))
        if name in spec.no_command or a in spec.no_command:
            raise _Stop(None)
        if name in spec.defer:
            raise _Stop(f"{name}: commands or images the scanner does not read")
        if name in spec.single:
            n = 0 if eq else spec.single[name]
            _values(argv, i + 1, n)
            i += 1 + n
            continue
        if a.startswith("--"):
            if name in spec.long_value:
                n = 0 if eq else 1
                _values(argv, i + 1, n)
                i += 1 + n
            elif name in spec.long_flag and not eq or name in spec.long_optional:
                i += 1
            else:
                raise _Stop(f"unknown option {name}")
            continue
        j = 1
        while j < len(a):
            c = a[j]
            if c in spec.short_value:
                if j + 1 == len(a):
                    _values(argv, i + 1, 1)
                    i += 1
                break
            if c in spec.short_optional:
                break
            if c in spec.short_flag:
                j += 1
                continue
            if c.isdigit() and spec is NICE:       # nice -5
                break
            raise _Stop(f"unknown option -{c}")
        i += 1
    return i


def _values(argv: list, i: int, n: int) -> None:
    for k in range(i, i + n):
        if k >= len(argv):
            raise _Stop("an option is missing its value")
        if isinstance(argv[k], Dyn) and not argv[k].one:
            raise _Stop(f"{argv[k].raw} may expand to several words or none")


def _take_operand(argv: list, i: int) -> int:
    if i >= len(argv):
        raise _Stop(None)
    if isinstance(argv[i], Dyn) and not argv[i].one:
        raise _Stop(f"{argv[i].raw} may expand to several words or none")
    return i + 1


def _split_string(s: str) -> list[str]:
    if re.search(r"[\\'\"$#]", s):
        raise _Stop("env -S with quotes, escapes or variables")
    return s.split()


def unwrap(argv: list, max_steps: int = 32) -> list[Step | Deferred]:
    """The command(s) argv finally runs: [] when it runs none (e.g. `command -v x`)."""
    return _unwrap(Step(list(argv)), max_steps)


def _unwrap(st: Step, budget: int) -> list[Step | Deferred]:
    try:
        while st.argv and budget > 0:
            budget -= 1
            head = st.argv[0]
            if isinstance(head, Dyn):
                return [st]
            base = os.path.basename(head)
            if base in SHELL_BUILTINS and st.external:
                raise _Stop(f"{base} is a shell builtin, but a program runs it here")
            if base in NOARG:
                st.argv = st.argv[1:]
                st.bypass_functions = base != "builtin"
                st.external = st.external or base != "builtin"
                if base != "builtin" and st.argv and st.argv[0] in ("--help", "--version"):
                    return []
            elif base == "command":
                i = 1
                while i < len(st.argv) and isinstance(st.argv[i], str) and st.argv[i].startswith("-") \
                        and st.argv[i] != "--":
                    if set(st.argv[i][1:]) - {"p", "v", "V"}:
                        raise _Stop(f"unknown option {st.argv[i]}")
                    if set(st.argv[i][1:]) & {"v", "V"}:
                        return []
                    if "p" in st.argv[i]:
                        st.path_changed = True      # `command -p`: the default PATH, never the shim
                    i += 1
                if i < len(st.argv) and st.argv[i] == "--":
                    i += 1
                st.argv, st.bypass_functions = st.argv[i:], True
            elif base == "exec":
                i = 1
                while i < len(st.argv) and isinstance(st.argv[i], str) and st.argv[i].startswith("-") \
                        and st.argv[i] != "--":
                    opt = st.argv[i]
                    if set(opt[1:]) - {"c", "l", "a"}:
                        raise _Stop(f"unknown option {opt}")
                    i += 1
                    if opt.endswith("a"):
                        _values(st.argv, i, 1)
                        i += 1
                if i < len(st.argv) and st.argv[i] == "--":
                    i += 1
                st.argv, st.bypass_functions = st.argv[i:], True
            elif base in LAUNCHERS:
                return _launcher(st, base, budget)
            elif base == "find":
                return _find(st, budget)
            elif base in WRAPPERS:
                seen: list = []
                i = _options(st.argv, 1, WRAPPERS[base], seen)
                while base == "env" and i < len(st.argv) and st.argv[i] == "-":   # `env -` is `env -i`
                    seen.append(("-i", None))
                    i = _options(st.argv, i + 1, WRAPPERS[base], seen)
                if base == "env":
                    for opt, val in seen:
                        if opt in ("-C", "--chdir") or opt.startswith("--chdir="):
                            st.chdir.append(opt.split("=", 1)[1] if "=" in opt else val)
                        elif opt.startswith("-C") and len(opt) > 2:
                            st.chdir.append(opt[2:])
                        if opt in ("-S", "--split-string") or opt.startswith(("--split-string=", "-S")):
                            s = opt.split("=", 1)[1] if "=" in opt else (opt[2:] if opt.startswith("-S") and
                                                                         len(opt) > 2 else val)
                            if not isinstance(s, str):
                                raise _Stop("env -S with a string computed at run time")
                            rest = st.argv[i:]
                            st.argv = ["env", *_split_string(s), *rest]
                            i = 1
                            seen = []
                            break
                    if any(o in ("-i", "--ignore-environment", "-") or (o.startswith("-") and not o.startswith("--")
                                                                         and "i" in o) for o, _ in seen):
                        st.path_changed = True
                    for o, val in seen:     # `env -u PATH`: execvp falls back to the default path
                        unset = val if o in ("-u", "--unset") else (o[2:] if o.startswith("-u") else
                                                                    o.split("=", 1)[1] if o.startswith("--unset=")
                                                                    else None)
                        if unset is not None and (not isinstance(unset, str) or unset == "PATH"):
                            st.path_changed = True
                    st.env_changed |= bool(seen)
                    while i < len(st.argv) and isinstance(st.argv[i], str) and _ASSIGN.match(st.argv[i]):
                        st.path_changed |= st.argv[i].startswith("PATH=")
                        st.env_changed = True
                        i += 1
                    if i < len(st.argv) and isinstance(st.argv[i], Dyn):
                        raise _Stop(f"{st.argv[i].raw} is computed at run time where env expects "
                                    "NAME=VALUE or the command")
                if base == "xargs":
                    if any(o.split("=")[0] == "--replace" if o.startswith("--") else ("I" in o or "i" in o)
                           for o, _ in seen):
                        raise _Stop("xargs -I/--replace puts its input into the command line")
                    st.more_args = True
                    if i >= len(st.argv):
                        return []
                for _ in range(OPERANDS.get(base, 0)):
                    i = _take_operand(st.argv, i)
                st.via.append(base)
                st.argv = st.argv[i:]
                st.bypass_functions = base != "time"      # the others are programs: they exec, never call
                st.external = st.external or base != "time"
                continue
            else:
                return [st]
            st.via.append(base)
        if budget <= 0:
            return [Deferred("too many nested wrappers")]
        return [st] if st.argv else []
    except _Stop as e:
        return [Deferred(e.args[0])] if e.args[0] else []


def _launcher(st: Step, base: str, budget: int) -> list[Step | Deferred]:
    spec = LAUNCHERS[base]
    out: list[Step | Deferred] = []
    rest = st.argv[1:]
    while True:
        seen: list = []
        i = _options(rest, 0, spec, seen)
        chdir = list(st.chdir)
        for opt, val in seen:
            name = opt.split("=", 1)[0]
            if name in ("-D", "--chdir", "-wdir", "--wdir", "-wd", "--wd"):
                chdir.append(opt.split("=", 1)[1] if "=" in opt else val)
            elif opt.startswith("-D") and len(opt) > 2:
                chdir.append(opt[2:])
        if i >= len(rest):
            raise _Stop(None) if not out else _Stop(None)
        end = len(rest)
        if spec is MPI:
            end = next((k for k in range(i, len(rest)) if rest[k] == ":"), len(rest))
        sub = Step(rest[i:end], chdir, st.via + [base], True, st.cwd_unknown, st.more_args, True, st.path_changed,
                   True)
        out += _unwrap(sub, budget - 1)
        if end >= len(rest):
            return out
        rest = rest[end + 1:]


def _find(st: Step, budget: int) -> list[Step | Deferred]:
    out: list[Step | Deferred] = []
    argv = st.argv
    i = 1
    while i < len(argv):
        a = argv[i]
        if isinstance(a, Dyn) and not a.one:
            return out + [Deferred(f"find with {a.raw}, which is computed at run time")]
        if a in ("-exec", "-execdir", "-ok", "-okdir"):
            j = i + 1
            while j < len(argv) and argv[j] not in (";", "+"):
                j += 1
            words = [Dyn("{}", True, "find substitutes each match") if isinstance(w, str) and "{}" in w else w
                     for w in argv[i + 1:j]]
            sub = Step(words, list(st.chdir), st.via + ["find"], True, a.endswith("dir") or st.cwd_unknown,
                       external=True, path_changed=st.path_changed, env_changed=st.env_changed)
            out += _unwrap(sub, budget - 1)
            i = j + 1
            continue
        if a in ("-fprintf", "-fprint", "-fls") or a == "-files0-from":
            i += 1
        i += 1
    return out
