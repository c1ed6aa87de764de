"""The controller prolog's job-script scanner: every construct, every wrapper, the
variable-certainty rule, and a property test against real bash as the peer.

Rule under test: an invocation is reported with the image bash would really run, or it
is deferred (resolved=False, with a note) — never resolved to another image."""
import os
import shutil
import signal
import subprocess

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from sifguard.slurm.script_scan import MAX_FOUND, MAX_SCRIPT, scan

ENV = {"HOME": "/home/u", "SLURM_SUBMIT_DIR": "/sub"}


def run(script, env=None, cwd="/w"):
    r = scan("#!/bin/bash\n" + script, ENV if env is None else env, cwd)
    got = [(f.line - 1, f.image) for f in r.images]
    deferred = [f.line - 1 for f in r.unresolved]
    for f in r.unresolved:
        assert f.note, f
    return got, deferred, r


def found(script, env=None, cwd="/w"):
    return run(script, env, cwd)[0]


def deferred(script, env=None, cwd="/w"):
    got, d, _ = run(script, env, cwd)
    assert got == [], got
    return d


# --- every construct: an image written plainly is found, on its line ------------------------

@pytest.mark.parametrize("script,line,image", [
    ("if true; then apptainer run /a.sif; fi", 1, "/a.sif"),
    ("if false; then :; elif true; then singularity exec /a.sif x; fi", 1, "/a.sif"),
    ("if false; then :\nelse\n  apptainer run /a.sif\nfi", 3, "/a.sif"),
    ("while true; do apptainer run /a.sif; break; done", 1, "/a.sif"),
    ("until false; do\n apptainer run /a.sif\ndone", 2, "/a.sif"),
    ("for i in 1 2; do apptainer run /a.sif; done", 1, "/a.sif"),
    ("for ((i=0;i<2;i++)); do apptainer run /a.sif; done", 1, "/a.sif"),
    ("select x in a; do apptainer run /a.sif; done", 1, "/a.sif"),
    ("case $1 in\n  a) apptainer run /a.sif ;;\nesac", 2, "/a.sif"),
    ("case x in *) apptainer run /a.sif;; esac", 1, "/a.sif"),
    ("{ apptainer run /a.sif; }", 1, "/a.sif"),
    ("{ echo; { apptainer run /a.sif; }; }", 1, "/a.sif"),
    ("( apptainer run /a.sif )", 1, "/a.sif"),
    ("! apptainer run /a.sif", 1, "/a.sif"),
    ("f() { apptainer run /a.sif; }", 1, "/a.sif"),
    ("function f {\n  apptainer run /a.sif\n}", 2, "/a.sif"),
    ("f() ( apptainer run /a.sif )", 1, "/a.sif"),
    ("x=$(apptainer exec /a.sif cat /etc/os-release)", 1, "/a.sif"),
    ("echo \"$(apptainer exec /a.sif hostname)\"", 1, "/a.sif"),
    ("echo `apptainer exec /a.sif hostname`", 1, "/a.sif"),
    ("diff <(apptainer exec /a.sif cat x) y", 1, "/a.sif"),
    ("tee >(apptainer exec /a.sif cat) < x", 1, "/a.sif"),
    ("true && apptainer run /a.sif", 1, "/a.sif"),
    ("false || apptainer run /a.sif", 1, "/a.sif"),
    ("echo x | apptainer exec /a.sif cat", 1, "/a.sif"),
    ("apptainer exec /a.sif cat |& tee log", 1, "/a.sif"),
    ("apptainer run /a.sif &", 1, "/a.sif"),
    ("apptainer run /a.sif > out 2>&1 < /dev/null", 1, "/a.sif"),
    ("[[ -f x ]] && apptainer run /a.sif", 1, "/a.sif"),
    ("[ -f \"$(apptainer exec /a.sif ls)\" ]", 1, "/a.sif"),
    ("cat <<EOT\n$(apptainer run /a.sif)\nEOT", 2, "/a.sif"),
    ("apptainer exec \\\n  --bind /x:/y \\\n  /a.sif cmd", 1, "/a.sif"),
    ("apptainer run '/a.sif'", 1, "/a.sif"),
    ('apptainer run "/a".sif', 1, "/a.sif"),
    ("apptainer run $'/a.sif'", 1, "/a.sif"),
    ("apptainer run /a\\.sif", 1, "/a.sif"),
])
def test_constructs_are_walked(script, line, image):
    assert found(script) == [(line, image)]


def test_data_is_not_an_invocation():
    assert found("echo 'apptainer run /a.sif'\necho \"singularity run /b.sif\"\n# apptainer run /c.sif\n"
                 "cat > f <<'E'\napptainer run /d.sif\n$(apptainer run /e.sif)\nE\n"
                 ": <<'X'\napptainer run /f.sif\nX\n") == []


# --- shells fed text ---------------------------------------------------------------------------

@pytest.mark.parametrize("script,line,image", [
    ("bash -c 'apptainer run /a.sif'", 1, "/a.sif"),
    ("sh -c \"apptainer run /a.sif\"", 1, "/a.sif"),
    ("bash -ec 'set -x; apptainer run /a.sif' name arg", 1, "/a.sif"),
    ("dash -c 'if true; then apptainer run /a.sif; fi'", 1, "/a.sif"),
    ("bash -c \"bash -c 'apptainer run /a.sif'\"", 1, "/a.sif"),
    ("bash <<EOF\napptainer run /a.sif\nEOF", 2, "/a.sif"),
    ("bash <<'EOF'\necho\napptainer run /a.sif\nEOF", 3, "/a.sif"),
    ("sh <<-EOF\n\tapptainer run /a.sif\n\tEOF", 2, "/a.sif"),
    ("IMG=/a.sif\nbash <<EOF\napptainer run $IMG\nEOF", 3, "/a.sif"),
    ("bash <<< 'apptainer run /a.sif'", 1, "/a.sif"),
    ("bash -s <<< \"apptainer run /a.sif\"", 1, "/a.sif"),
    ("echo 'apptainer run /a.sif' | bash", 1, "/a.sif"),
    ("echo apptainer run /a.sif | sh -s", 1, "/a.sif"),
    ("printf '%s\\n' 'apptainer run /a.sif' | bash", 1, "/a.sif"),
    ("cat <<'E' | bash\napptainer run /a.sif\nE", 2, "/a.sif"),
    ("eval 'apptainer run /a.sif'", 1, "/a.sif"),
    ("eval apptainer run /a.sif", 1, "/a.sif"),
    ("trap 'apptainer run /a.sif' EXIT", 1, "/a.sif"),
])
def test_text_fed_to_a_shell_is_scanned(script, line, image):
    assert found(script) == [(line, image)]


@pytest.mark.parametrize("script", [
    "bash -c \"$1\"",
    "bash -c \"$(cat cmd)\"",
    "cat cmds.txt | bash",
    "bash < cmds.txt",
    "bash job.sh",
    "sh ./step2",
    "curl -s http://x/y | sh",
    "bash <<EOF\napptainer run $(pick)\nEOF",
    "bash <<< \"$1\"",
    "eval \"$1\"",
    "eval \"apptainer run $2\"",
    "trap \"$1\" EXIT",
    "source ./more.sh",
    ". /etc/profile.d/x.sh",
    "srun --pty bash",
    "bash -c 'apptainer run $IMG'",
])
def test_text_the_scanner_cannot_see_is_deferred(script):
    env = dict(ENV, CMD="apptainer run /a.sif", IMG="/a.sif")
    if "'apptainer run $IMG'" in script:
        env.pop("IMG")
        script = "IMG=/a.sif\n" + script       # not exported: the child shell does not see it
    d = deferred(script, env)
    assert d


# --- wrappers and launchers -------------------------------------------------------------------

@pytest.mark.parametrize("script,image", [
    ("srun apptainer exec /a.sif x", "/a.sif"),
    ("srun -n 4 -N2 --mpi=pmix --cpu-bind=cores apptainer exec /a.sif x", "/a.sif"),
    ("srun --ntasks-per-node 2 -l -u --exact singularity run /a.sif", "/a.sif"),
    ("srun -c4 --gres gpu:1 --export=ALL -- apptainer run /a.sif", "/a.sif"),
    ("srun --chdir /d apptainer run a.sif", "/d/a.sif"),
    ("srun -D/d apptainer run a.sif", "/d/a.sif"),
    ("srun --exclusive apptainer run /a.sif", "/a.sif"),
    ("mpirun -np 4 apptainer exec /a.sif x", "/a.sif"),
    ("mpirun -np 4 -x LD_LIBRARY_PATH --mca btl self,vader --bind-to core apptainer exec /a.sif x", "/a.sif"),
    ("mpiexec -n 2 -genv A 1 -ppn 1 apptainer exec /a.sif x", "/a.sif"),
    ("prun -n 2 apptainer exec /a.sif x", "/a.sif"),
    ("env apptainer run /a.sif", "/a.sif"),
    ("env A=1 B=2 apptainer run /a.sif", "/a.sif"),
    ("env -u HOME -i A=1 apptainer run /a.sif", "/a.sif"),
    ("env --unset=X --chdir=/d apptainer run a.sif", "/d/a.sif"),
    ("env -C /d apptainer run a.sif", "/d/a.sif"),
    ("env -S 'apptainer run /a.sif'", "/a.sif"),
    ("command apptainer run /a.sif", "/a.sif"),
    ("command -p apptainer run /a.sif", "/a.sif"),
    ("exec apptainer run /a.sif", "/a.sif"),
    ("exec -a name apptainer run /a.sif", "/a.sif"),
    ("exec -cl apptainer run /a.sif", "/a.sif"),
    ("time apptainer run /a.sif", "/a.sif"),
    ("time -p apptainer run /a.sif", "/a.sif"),
    ("/usr/bin/time -f %e -o t.log apptainer run /a.sif", "/a.sif"),
    ("nohup apptainer run /a.sif &", "/a.sif"),
    ("nice apptainer run /a.sif", "/a.sif"),
    ("nice -n 5 apptainer run /a.sif", "/a.sif"),
    ("nice -5 apptainer run /a.sif", "/a.sif"),
    ("nice --adjustment=5 apptainer run /a.sif", "/a.sif"),
    ("timeout 10m apptainer run /a.sif", "/a.sif"),
    ("timeout -s KILL -k 5 10m apptainer run /a.sif", "/a.sif"),
    ("timeout --preserve-status 1h apptainer run /a.sif", "/a.sif"),
    ("stdbuf -oL -e0 apptainer run /a.sif", "/a.sif"),
    ("stdbuf -o L apptainer run /a.sif", "/a.sif"),
    ("taskset 0x3 apptainer run /a.sif", "/a.sif"),
    ("taskset -c 0-3 apptainer run /a.sif", "/a.sif"),
    ("numactl --membind=0 --cpunodebind 0 apptainer run /a.sif", "/a.sif"),
    ("numactl -l apptainer run /a.sif", "/a.sif"),
    ("chrt -f 10 apptainer run /a.sif", "/a.sif"),
    ("chrt 0 apptainer run /a.sif", "/a.sif"),
    ("ionice -c2 -n7 apptainer run /a.sif", "/a.sif"),
    ("ionice -c 3 -t apptainer run /a.sif", "/a.sif"),
    ("time nohup nice -n 1 timeout 5 stdbuf -oL taskset -c 1 numactl -l chrt -o 0 ionice -c3 env A=1 "
     "srun -n1 apptainer run /a.sif", "/a.sif"),
    ("run-singularity /a.sif arg", "/a.sif"),
    ("srun run-singularity /a.sif", "/a.sif"),
    ("./a.sif arg", "/w/a.sif"),
    ("/abs/a.sif", "/abs/a.sif"),
    ("srun ./a.sif", "/w/a.sif"),
    ("/usr/bin/apptainer run /a.sif", "/a.sif"),
    ("/opt/apptainer/bin/singularity exec /a.sif x", "/a.sif"),
    ("xargs -n1 apptainer exec /a.sif cat < list", "/a.sif"),
    ("find . -name '*.txt' -exec apptainer exec /a.sif cat {} \\;", "/a.sif"),
    ("find . -exec apptainer exec /a.sif wc {} +", "/a.sif"),
    ("builtin command apptainer run /a.sif", "/a.sif"),
])
def test_wrappers_are_peeled(script, image):
    assert [i for _, i in found(script)] == [image]


def test_mpi_contexts_each_scanned():
    assert [i for _, i in found("mpirun -n 1 ./a.out : -n 2 apptainer exec /a.sif x : -n 1 apptainer exec /b.sif y")] \
        == ["/a.sif", "/b.sif"]


@pytest.mark.parametrize("script", [
    "srun --no-such-option apptainer run /a.sif",
    "srun -Y apptainer run /a.sif",
    "srun $1 apptainer run /a.sif",
    "srun --multi-prog tasks.conf",
    "mpirun --app appfile",
    "mpirun --no-such apptainer run /a.sif",
    "env -S \"$1\" apptainer run /a.sif",
    "env $1 apptainer run /a.sif",
    "nice -Z 3 apptainer run /a.sif",
    "timeout $T apptainer run /a.sif",
    "xargs apptainer exec < images",
    "ls *.sif | xargs -n1 apptainer run",
    "xargs -I{} apptainer run {} < images",
    "xargs -I IMG apptainer run IMG < images",
    "find . -name '*.sif' -exec apptainer run {} \\;",
    "find . -name '*.sif' -exec singularity run '{}' ';'",
    "find /x -execdir apptainer run a.sif \\;",
    "find /x -exec ./{} \\;",
    "sudo apptainer run /a.sif",
    "parallel apptainer run ::: /a.sif /b.sif",
    "flock /tmp/l apptainer run /a.sif",
    "ssh node1 'apptainer run /a.sif'",
    "python3 -c \"import os; os.system('apptainer run /a.sif')\"",
    "srun --container=/bundles/x hostname",
    "a.sif",
    "exec -a $NAME apptainer run /a.sif",
])
def test_wrappers_the_scanner_cannot_follow_defer(script):
    assert deferred(script, {"HOME": "/home/u", "SRUN_OPTS": "-o x"})


def test_unset_variables_expand_to_nothing():
    # never assigned by the script and absent from the job's environment: certainly empty
    assert found("srun $SRUN_OPTS apptainer run /a.sif\nenv $VARS apptainer run /b.sif\n", {"HOME": "/h"}) == [
        (1, "/a.sif"), (2, "/b.sif")]


def test_grammar_gaps_are_deferred():
    # tree-sitter-bash reads `! { …; }` as a command named `{`: deferred, not trusted
    got, d, _ = run("! { apptainer run /a.sif; }")
    assert got == [] and d == [1]


@pytest.mark.parametrize("launch", ["env IMG=/evil.sif", "env -u IMG", "env -i", "srun --export=ALL,IMG=/evil.sif",
                                    "mpirun -x IMG=/evil.sif", "IMG=/evil.sif", "env -S 'IMG=/evil.sif'"])
def test_child_shell_environment_changed_by_a_wrapper_is_not_known(launch):
    got, d, _ = run(f"{launch} bash -c 'apptainer run $IMG'\n", dict(ENV, IMG="/good.sif"))
    assert got == [] and d == [1]
    assert found("bash -c 'apptainer run $IMG'\n", dict(ENV, IMG="/good.sif")) == [(1, "/good.sif")]


def test_sbatch_container_directive_is_deferred():
    r = scan("#!/bin/bash\n#SBATCH --container=/b/x\nhostname\n", ENV, "/w")
    assert [(f.line, f.resolved) for f in r.found] == [(2, False)]


def test_data_commands_naming_images_are_quiet():
    _, d, r = run("echo running apptainer run /a.sif\nmodule load apptainer\nls -l /a.sif\n"
                  "sha256sum /a.sif\ngrep -c apptainer log\n")
    assert r.found == []


def test_program_word_is_recorded():
    r = scan("#!/bin/bash\nRT=/usr/bin/apptainer\napptainer run /a.sif\n/usr/bin/singularity run /b.sif\n"
             "$RT run /c.sif\n./d.sif\nrun-singularity /e.sif\n", ENV, "/w")
    assert [(f.program, f.via_path, f.image) for f in r.images] == [
        ("apptainer", True, "/a.sif"), ("/usr/bin/singularity", False, "/b.sif"),
        ("/usr/bin/apptainer", False, "/c.sif"), ("./d.sif", False, "/w/d.sif"),
        ("run-singularity", True, "/e.sif")]
    assert r.images[0].argv == ("apptainer", "run", "/a.sif")


def test_malformed_static_line_is_an_error_not_a_deferral():
    _, _, r = run("apptainer exec\nsingularity run --bind\n")
    assert [f.error != "" for f in r.found] == [True, True] and all(f.resolved for f in r.found)
    assert r.errors == r.found and r.images == []
    _, d, r = run("apptainer exec $1\n", {"HOME": "/h", "ARGS": "x"})
    assert r.errors == [] and d == [1]


# --- functions and aliases ------------------------------------------------------------------------

@pytest.mark.parametrize("script", [
    "apptainer() { command apptainer run /evil.sif; }\napptainer run /good.sif",
    "singularity() { :; }\nsingularity exec /good.sif x",
    "srun() { bash -c \"$*\"; }\nsrun apptainer run /good.sif",
    "run-singularity() { :; }\nrun-singularity /good.sif",
    "apptainer run /good.sif\napptainer() { :; }",
])
def test_function_named_like_a_runtime_defers_calls(script):
    got, d, _ = run(script)
    assert all(img != "/good.sif" for _, img in got) and d


def test_function_shadow_is_bypassed_by_command_and_launchers():
    got = found("apptainer() { :; }\ncommand apptainer run /a.sif\nsrun apptainer run /b.sif\n"
                "env apptainer run /c.sif\n")
    assert [i for _, i in got] == ["/a.sif", "/b.sif", "/c.sif"]


def test_exported_function_from_environment_defers():
    d = deferred("apptainer run /good.sif\n", dict(ENV, **{"BASH_FUNC_apptainer%%": "() { :; }"}))
    assert d == [1]


@pytest.mark.parametrize("shadow", ["export() { :; }", "declare() { :; }", "readonly() { :; }", "unset() { :; }",
                                    "read() { :; }", "eval() { :; }", "set() { :; }"])
def test_function_shadowing_a_builtin_voids_variable_certainty(shadow):
    got, d, _ = run(f"{shadow}\nexport IMG=/good.sif\napptainer run $IMG\n", dict(ENV, IMG="/evil.sif"))
    assert got == [] and d == [3]


def test_aliases_void_variable_certainty():
    got, d, _ = run("shopt -s expand_aliases\nalias export=:\nexport IMG=/good.sif\napptainer run $IMG\n",
                    dict(ENV, IMG="/evil.sif"))
    assert got == [] and d == [4]


def test_path_changes_are_recorded():
    r = scan("#!/bin/bash\napptainer run /a.sif\nPATH=/mine:$PATH apptainer run /b.sif\n"
             "env PATH=/mine apptainer run /c.sif\nenv -i apptainer run /d.sif\n", ENV, "/w")
    assert [(f.image, f.via_path) for f in r.images] == [
        ("/a.sif", True), ("/b.sif", False), ("/c.sif", False), ("/d.sif", False)]
    r = scan("#!/bin/bash\nexport PATH=$HOME/bin:$PATH\napptainer run /a.sif\n", ENV, "/w")
    assert [(f.image, f.via_path) for f in r.images] == [("/a.sif", False)]
    r = scan("#!/bin/bash\nhash -p /tmp/x apptainer\napptainer run /a.sif\n", ENV, "/w")
    assert [(f.image, f.via_path) for f in r.images] == [("/a.sif", False)]


def test_function_body_uses_its_arguments_deferred():
    got, d, _ = run("run_it() { apptainer run \"$1\"; }\nrun_it /evil.sif\n")
    assert got == [] and d == [1]


@pytest.mark.parametrize("prefix", ["shopt -s expand_aliases\n", "set -o posix\n"])
def test_aliases_defer_later_lines(prefix):
    got, d, _ = run(prefix + "alias ls='apptainer run /evil.sif'\nls\nhostname\napptainer run /a.sif\n")
    assert d == [3] and got == [(5, "/a.sif")]
    got, d, _ = run(prefix + "alias go='srun '\ngo apptainer run /a.sif\napptainer run /b.sif\n")
    assert got == [] and d == [3, 4]
    got, d, _ = run(prefix + "alias apptainer='apptainer run /evil.sif #'\ntime apptainer run /a.sif\n"
                    "time -p apptainer run /b.sif\ncommand apptainer run /c.sif\n")
    assert got == [(5, "/c.sif")] and d == [3, 4]       # after `time` a word is alias-expanded
    got, d, _ = run(prefix + "alias apptainer='apptainer run /evil.sif #'\neval 'apptainer run /a.sif'\n"
                    "trap 'apptainer run /b.sif' EXIT\n")
    assert got == [] and d == [3, 4]


@pytest.mark.parametrize("unseen", [
    "eval 'shopt -s expand_aliases; alias apptainer=\"apptainer run /evil.sif #\"'",
    "eval \"$1\"", "source ./settings.sh", ". ~/.bashrc", "trap 'shopt -s expand_aliases' DEBUG",
    "enable -f ./x.so x", "$1 x", "module load apptainer",
])
def test_code_the_scanner_cannot_read_may_alias_every_later_command(unseen):
    env = dict(ENV, **{"BASH_FUNC_module%%": "() { eval $(/usr/bin/modulecmd bash $*); }"})
    got, d, _ = run(f"apptainer run /before.sif\n{unseen}\napptainer run /good.sif\nhostname\n", env)
    assert got == [(1, "/before.sif")] and 3 in d


@pytest.mark.parametrize("inert", ["trap 'rm -f /tmp/x.$$' EXIT", "trap - EXIT", "trap '' HUP",
                                   "eval 'echo hello'", "eval apptainer run /x.sif", "trap 'hostname; date' ERR"])
def test_inert_eval_and_trap_keep_certainty(inert):
    got, _, _ = run(f"{inert}\nIMG=/a.sif\napptainer run $IMG\n")
    assert (3, "/a.sif") in got


def test_alias_without_expansion_in_bash_is_inert():
    assert found("alias ls='apptainer run /evil.sif'\napptainer run /a.sif\n") == [(2, "/a.sif")]


def test_sh_shebang_expands_aliases():
    r = scan("#!/bin/sh\nalias apptainer='apptainer run /evil.sif #'\napptainer run /good.sif\n", ENV, "/w")
    assert r.images == [] and len(r.unresolved) == 1


# --- variables: good.sif / evil.sif ---------------------------------------------------------------

REASSIGN = [
    "if [ -n \"$X\" ]; then IMG=/evil.sif; fi",
    "if true; then :; else IMG=/evil.sif; fi",
    "[ -f x ] && IMG=/evil.sif",
    "while read -r IMG; do break; done < list",
    "while false; do IMG=/evil.sif; done",
    "for IMG in /evil.sif; do :; done",
    "for x in 1; do IMG=/evil.sif; done",
    "select IMG in /evil.sif; do break; done",
    "case $X in *) IMG=/evil.sif;; esac",
    "f() { IMG=/evil.sif; }; f",
    "f() { IMG=/evil.sif; }",
    "f() { local IMG=/evil.sif; }",
    "( IMG=/evil.sif )",
    "{ IMG=/evil.sif; }",
    "echo x | IMG=/evil.sif",
    "IMG=/evil.sif true",
    "read IMG",
    "read -r -p prompt IMG < f",
    "read -a IMG <<< /evil.sif",
    "mapfile IMG < f",
    "readarray -t IMG < f",
    "getopts ab IMG",
    "printf -v IMG %s /evil.sif",
    "wait -p IMG",
    "eval 'IMG=/evil.sif'",
    "eval \"$CMD\"",
    "source ./settings.sh",
    ". ./settings.sh",
    "trap 'IMG=/evil.sif' USR1",
    ": ${IMG:=/evil.sif}",
    ": ${IMG=/evil.sif}",
    "unset IMG",
    "unset -v IMG",
    "IMG+=.bak",
    "IMG=(/evil.sif)",
    "IMG[0]=/evil.sif",
    "declare IMG=/evil.sif",
    "declare -g IMG=/evil.sif",
    "typeset IMG=/evil.sif",
    "export IMG=/evil.sif",
    "readonly IMG=/evil.sif",
    "declare -n REF=IMG; REF=/evil.sif",
    "let IMG=3",
    "(( IMG = 3 ))",
    "x=$(( IMG = 3 ))",
    "N='IMG=3'; : $((N))",
    "exec {IMG}>/dev/null",
    "IMG=/evil.sif &",
    "$CMD IMG=/evil.sif",
    "declare \"$V=/evil.sif\"",
    "IMG=/good.sif",
    "builtin export IMG=/evil.sif", "command declare IMG=/evil.sif", "time read IMG", "command -p unset IMG",
    "builtin read IMG", "command eval 'IMG=/evil.sif'", "builtin source ./x",
]


@pytest.mark.parametrize("change", REASSIGN)
@pytest.mark.parametrize("use", ["apptainer run $IMG", "apptainer run \"$IMG\"", "apptainer run ${IMG}",
                                 "srun apptainer exec \"${IMG}\" x"])
def test_reassigned_variable_is_deferred(change, use):
    got, d, _ = run(f"IMG=/good.sif\n{change}\n{use}\n", dict(ENV, CMD="read", V="IMG"))
    assert got == [] and d, (change, use, got)


@pytest.mark.parametrize("change", ["f() { IMG=/evil.sif; }", "read IMG", "unset IMG", "IMG=/evil.sif"])
def test_use_in_function_body_sees_writes_anywhere(change):
    got, d, _ = run(f"IMG=/good.sif\nrun() {{ apptainer run $IMG; }}\n{change}\nrun\n")
    assert got == [] and d


def test_write_after_use_in_a_loop_is_seen():
    got, d, _ = run("IMG=/good.sif\nfor i in 1 2; do\n  apptainer run $IMG\n  IMG=/evil.sif\ndone\n")
    assert got == [] and d == [3]
    got, d, _ = run("IMG=/good.sif\nwhile true; do apptainer run $IMG; source x; done\n")
    assert got == [] and 2 in d


def test_use_before_the_only_assignment_is_not_certain():
    got, d, _ = run("apptainer run ${IMG:-/default.sif}\nIMG=/evil.sif\n")
    assert got == [] and d == [1]


def test_function_defined_before_the_assignment_is_not_certain():
    got, d, _ = run("go() { apptainer run $IMG; }\nIMG=/good.sif\ngo\n")
    assert got == [] and d == [1]


@pytest.mark.parametrize("script,image", [
    ("IMG=/a.sif\napptainer run $IMG", "/a.sif"),
    ("IMG=/a.sif\napptainer run \"${IMG}\"", "/a.sif"),
    ("D=/data\nIMG=$D/a.sif\napptainer run $IMG", "/data/a.sif"),
    ("IMG=/a.sif\nrun() { apptainer run $IMG; }\nrun", "/a.sif"),
    ("export IMG=/a.sif\napptainer run $IMG", "/a.sif"),
    ("declare -x IMG=/a.sif\napptainer run $IMG", "/a.sif"),
    ("IMG=/a.sif\nexport IMG\napptainer run $IMG", "/a.sif"),
    ("IMG=~/a.sif\napptainer run $IMG", "/home/u/a.sif"),
    ("apptainer run ~/a.sif", "/home/u/a.sif"),
    ("apptainer run $HOME/a.sif", "/home/u/a.sif"),
    ("apptainer run ${SLURM_SUBMIT_DIR}/a.sif", "/sub/a.sif"),
    ("apptainer run ${NOT_SET:-/a.sif}", "/a.sif"),
    ("apptainer run ${NOT_SET-/a.sif}", "/a.sif"),
    ("apptainer run ${HOME:+/a.sif}", "/a.sif"),
    ("apptainer run /a${NOT_SET:+x}.sif", "/a.sif"),
    ("OPTS='--bind /x:/y'\napptainer exec $OPTS /a.sif ls", "/a.sif"),
    ("RT=apptainer\n$RT run /a.sif", "/a.sif"),
    ("IMG=/a.sif\nfor i in 1 2; do apptainer run $IMG; done", "/a.sif"),
    ("IMG=/a.sif\nif true; then apptainer run \"$IMG\"; fi", "/a.sif"),
    ("A=1 B=/a.sif\napptainer run $B", "/a.sif"),
    ("IMG=/a.sif\nbash -c \"apptainer run $IMG\"", "/a.sif"),
    ("for ((i=0; i<3; i++)); do :; done\nIMG=/a.sif\napptainer run $IMG", "/a.sif"),
    ("N=3\n: $((N * 2))\nIMG=/a.sif\napptainer run $IMG", "/a.sif"),
])
def test_certain_values_resolve(script, image):
    assert [i for _, i in found(script, dict(ENV, USER_IMG="/u.sif"))] == [image]


@pytest.mark.parametrize("script", [
    "apptainer run $1", "apptainer run \"$1\"", "apptainer run ${1}", "apptainer run \"$@\"", "apptainer run $*",
    "apptainer run ${@}",
    "apptainer run $$.sif", "apptainer run $RANDOM.sif", "apptainer run $PWD/a.sif",
    "apptainer run ${SLURM_PROCID}.sif", "apptainer run $SLURM_JOB_NAME.sif",
    "apptainer run *.sif", "apptainer run /x/?.sif", "apptainer run /x/[ab].sif", "apptainer run {a,b}.sif",
    "apptainer run /x/{1..3}.sif", "apptainer run ~other/a.sif", "apptainer run ~+/a.sif",
    "A=(/a.sif)\napptainer run ${A[0]}", "apptainer run ${X/a/b}", "apptainer run ${#X}",
    "apptainer run ${X:1:2}", "apptainer run ${!X}", "apptainer run $(ls *.sif)", "apptainer run `pick`",
    "apptainer run $((1+2)).sif", "apptainer run <(cat x)", "IMG='/x/*.sif'\napptainer run $IMG",
    "apptainer run ${HOME:?}/../$(id -un).sif", "IMG=$(pick)\napptainer run $IMG",
    "IMG=/a.sif\nIFS=/\napptainer run $IMG", "$RUNTIME run /a.sif", "\"$RT\" exec /a.sif",
    "apptainer $1 /a.sif", "apptainer \"$1\" /a.sif", "apptainer exec $1 /a.sif",
    "apptainer exec --bind $1 /a.sif", "apptainer exec $(opts) /a.sif", "apptainer \"$(sub)\" /a.sif",
])
def test_dynamic_words_defer(script):
    env = {"HOME": "/home/u", "X": "abc", "SOPTS": "-B /a", "B": "/a:/b", "SUB": "exec"}
    assert deferred(script, env)


def test_one_field_option_value_keeps_positions():
    # a quoted unknown is exactly one word: as an option's value it cannot move the image
    assert found("apptainer exec --bind \"$1\" /a.sif x\nsrun -n \"$(nproc)\" apptainer run /b.sif") == [
        (1, "/a.sif"), (2, "/b.sif")]
    assert deferred("apptainer exec --bind $1 /a.sif x\napptainer exec \"$1\" /a.sif\n") == [1, 2]


def test_environment_values_are_used():
    env = {"HOME": "/h", "SUB": "exec", "OPTS": "-B /a", "B": "/a:/b"}
    # (exec takes IMAGE and COMMAND: the runtime's grammar refuses an exec without a command)
    assert found("apptainer $SUB /a.sif x\napptainer exec $OPTS /b.sif x\napptainer exec --bind $B /c.sif x", env) == [
        (1, "/a.sif"), (2, "/b.sif"), (3, "/c.sif")]


def test_grammar_joining_lines_is_undone():
    # tree-sitter-bash hangs `A=1 B=2 <newline> cmd` into one command; bash runs two statements
    assert found("A=1 B=/a.sif\napptainer run $B\n") == [(2, "/a.sif")]
    assert deferred("B=/a.sif A=1 apptainer run $B\n") == [1]


def test_unknown_env_name_is_unset_and_known_one_resolves():
    assert found("apptainer run ${IMG:-/d.sif}", {"HOME": "/h", "IMG": "/u.sif"}) == [(1, "/u.sif")]
    assert found("apptainer run ${IMG:-/d.sif}", {"HOME": "/h"}) == [(1, "/d.sif")]


def test_login_shell_or_bash_env_makes_everything_uncertain():
    # the profile (user-written) runs first: it may set any variable, function or alias
    r = scan("#!/bin/bash -l\napptainer run $IMG\nIMG2=/b.sif\napptainer run $IMG2\napptainer run /c.sif\n",
             {"IMG": "/a.sif"}, "/w")
    assert r.images == [] and [f.line for f in r.unresolved] == [2, 4, 5]
    r = scan("#!/bin/bash\napptainer run $IMG\n", {"IMG": "/a.sif", "BASH_ENV": "/home/u/.env"}, "/w")
    assert r.images == [] and len(r.unresolved) == 1


def test_non_shell_interpreter_is_deferred_whole():
    r = scan("#!/usr/bin/env python3\nimport os\nos.system('apptainer run /a.sif')\n", ENV, "/w")
    assert r.images == [] and len(r.unresolved) == 1


# --- working directory -----------------------------------------------------------------------------

@pytest.mark.parametrize("script,image", [
    ("apptainer run a.sif", "/w/a.sif"),
    ("set -e\ncd /s\napptainer run a.sif", "/s/a.sif"),
    ("set -euo pipefail\ncd /s\napptainer run a.sif", "/s/a.sif"),
    ("set -o errexit\ncd /s\napptainer run a.sif", "/s/a.sif"),
    ("cd /w\napptainer run a.sif", "/w/a.sif"),              # a failed cd would leave it there too
    ("cd /s || exit 1\napptainer run a.sif", "/s/a.sif"),
    ("cd /s && apptainer run a.sif", "/s/a.sif"),
    ("cd /s && cd t && apptainer run ../a.sif", "/s/t/../a.sif"),     # `..` is the kernel's to resolve
    ("command cd /s && apptainer run a.sif", "/s/a.sif"),
    ("cd /s/link/.. && apptainer run a.sif", "/s/a.sif"),              # bash's logical cd is lexical
    ("set -e\ncd sub\ncd ../other\napptainer run a.sif", "/w/other/a.sif"),
    ("set -e\ncd $SLURM_SUBMIT_DIR\napptainer run a.sif", "/sub/a.sif"),
    ("set -e\ncd\napptainer run a.sif", "/home/u/a.sif"),
    ("(cd /x; :)\napptainer run /abs.sif", "/abs.sif"),
])
def test_working_directory(script, image):
    assert [i for _, i in found(script)] == [image]


def test_cd_to_the_submit_dir_and_errexit_shebang():
    env = dict(ENV, SLURM_SUBMIT_DIR="/w")
    assert found("cd $SLURM_SUBMIT_DIR\napptainer run a.sif", env) == [(2, "/w/a.sif")]
    r = scan("#!/bin/bash -e\ncd /s\napptainer run a.sif\n", ENV, "/w")
    assert [f.image for f in r.images] == ["/s/a.sif"]


@pytest.mark.parametrize("script", [
    "cd /s\napptainer run a.sif",                 # if /s is missing bash goes on in /w
    "cd sub || true\napptainer run a.sif",
    "set -e\nset +e\ncd /s\napptainer run a.sif",
    "cd /s\nset -e\napptainer run a.sif",
    "if true; then set -e; fi\ncd /s\napptainer run a.sif",
    "set -e\nset +o errexit\ncd /s\napptainer run a.sif",
    "if true; then cd /s; fi\napptainer run a.sif",
    "cd $DIR\napptainer run a.sif",
    "cd -\napptainer run a.sif",
    "pushd /s\napptainer run a.sif",
    "popd\napptainer run a.sif",
    "for d in a b; do apptainer run a.sif; cd $d; done",
    "f() { cd /s; }\nf\napptainer run a.sif",
    "cd /s && true\napptainer run a.sif",
    "cd /s || true\napptainer run a.sif",
    "source x\napptainer run a.sif",
    "set -e\nCDPATH=/evil\ncd sub\napptainer run a.sif",
    "cd /s && true || apptainer run a.sif",
    "g() { apptainer run a.sif; }\ncd /x\ng",
    "set -eP\ncd /s/link/..\napptainer run a.sif",
    "set -e\ncd -P /s/link/..\napptainer run a.sif",
    "set -e\ncd() { builtin cd /evil; }\ncd /s\napptainer run a.sif",
    "command cd /s\napptainer run a.sif", "builtin cd /s\napptainer run a.sif", "time cd /s\napptainer run a.sif",
    "command cd /s && true\napptainer run a.sif",
])
def test_uncertain_working_directory_defers_relative_images(script):
    assert deferred(script, {"HOME": "/home/u"})


# --- parse errors and bounds ------------------------------------------------------------------------

@pytest.mark.parametrize("script", [
    "apptainer run /a.sif\nif then (\napptainer run /b.sif\n",
    "apptainer run /a.sif\necho \"unterminated\napptainer run /b.sif\n",
    "x=$(\napptainer run /a.sif\n",
    "case x in\napptainer run /a.sif\n",
    "apptainer run /a.sif\nfi\n",
    "apptainer run /a.sif\ndone\n",
])
def test_syntax_the_parser_cannot_read_defers_everything(script):
    got, d, r = run(script)
    assert got == [] and d and r.errors == []


def test_words_the_grammar_splits_are_deferred():
    # tree-sitter-bash splits `"a"'b'c$X.sif` into two arguments; bash keeps one word
    got, d, _ = run("X=1\napptainer run \"/a\"'b'c$X.sif\n")
    assert got == [] and d == [2]


@pytest.mark.parametrize("script", ["apptainer run '/q d'\\ \n", "apptainer run \"/a\"\\ \n",
                                    "apptainer run \\ \n", "apptainer run /a.sif $\n",
                                    "IMG='/a.sif'\\ \napptainer run \"$IMG\"\n", "apptainer run $'/a'\\ \n"])
def test_bytes_the_grammar_drops_are_a_parse_gap(script):
    # tree-sitter-bash drops a trailing `\ ` after a quoted word; bash keeps the space in the word
    got, d, _ = run(script)
    assert got == [] and d


def test_several_heredocs_on_one_line_defer():
    got, d, _ = run("cat <<A && bash <<'B'\napptainer run /x.sif\nA\napptainer run /y.sif\nB\n")
    assert got == [] and d


def test_non_ascii_is_kept_and_cannot_crash_the_parser():
    assert found("apptainer run /données/é.sif\necho \"naïve ✓\"\n") == [(1, "/données/é.sif")]
    assert deferred("apptainer run $é\n")          # `$é` is no variable for bash; the grammar balks: deferred
    # tree-sitter-bash's scanner crashed the process on `{` + U+E0001; run in a child to see it
    code = ("import sys; sys.path.insert(0, %r)\nfrom sifguard.slurm.script_scan import scan\n"
            "for cp in (0xe0001, 0x10ffff, 0x33d65, 0xffff):\n"
            "    for t in ('{%%s s', '${x%%s}', '{%%s}', 'apptainer run %%s.sif'):\n"
            "        for _ in range(30): scan(t %% chr(cp))\n") % os.path.dirname(os.path.dirname(__file__))
    assert subprocess.run([shutil.which("python3") or "python3", "-c", code], capture_output=True).returncode == 0


def test_oversized_script_is_deferred_whole():
    r = scan("#!/bin/bash\n" + "apptainer run /a.sif\n" * (MAX_SCRIPT // 20), ENV, "/w")
    assert r.images == [] and len(r.unresolved) == 1


def test_findings_are_capped():
    r = scan("#!/bin/bash\n" + "apptainer run /a.sif\n" * (MAX_FOUND + 50), ENV, "/w")
    assert len(r.found) == MAX_FOUND + 1 and not r.found[-1].resolved


def test_nested_shell_text_depth_is_bounded():
    inner = "apptainer run /a.sif"
    for _ in range(8):
        inner = "bash -c " + repr(inner).replace("\\'", "'\"'\"'")
    r = scan("#!/bin/bash\n" + inner + "\n", ENV, "/w")
    assert r.images == [] and r.unresolved


def test_deep_nesting_does_not_crash():
    r = scan("#!/bin/bash\n" + "{ " * 3000 + "apptainer run /a.sif" + "; }" * 3000 + "\n", ENV, "/w")
    assert all(f.image in (None, "/a.sif") for f in r.found)
    r = scan("#!/bin/bash\necho " + "$(" * 500 + "apptainer run /a.sif" + ")" * 500 + "\n", ENV, "/w")
    assert all(f.image in (None, "/a.sif") for f in r.found)


# --- the property: the image bash really runs, or deferred --------------------------------------------

BASH = shutil.which("bash")

_CHANGES = [
    "", "IMG=/evil.sif", "if true; then IMG=/evil.sif; fi", "if false; then IMG=/evil.sif; fi",
    "[ -d / ] && IMG=/evil.sif", "for IMG in /evil.sif; do :; done", "for i in 1; do IMG=/evil.sif; done",
    "case x in x) IMG=/evil.sif;; esac", "case x in y) IMG=/evil.sif;; esac", "( IMG=/evil.sif )",
    "{ IMG=/evil.sif; }", "echo | IMG=/evil.sif", "read IMG <<< /evil.sif", "read -r IMG < $EVIL_FILE",
    ": ${IMG:=/evil.sif}", "unset IMG", "IMG+=.x", "declare IMG=/evil.sif", "export IMG=/evil.sif",
    "printf -v IMG %s /evil.sif", "eval IMG=/evil.sif", "source $EVIL_FILE2", "set_it() { IMG=/evil.sif; }",
    "set_it() { IMG=/evil.sif; }; set_it", "mapfile -t IMG < $EVIL_FILE", "IMG=$(echo /evil.sif)",
    "while read -r IMG; do break; done < $EVIL_FILE", "trap 'IMG=/evil.sif' DEBUG", "cd /tmp",
    "if true; then cd /; fi", "declare -n R=IMG; R=/evil.sif", "IMG=(/evil.sif)", "cd sub", "cd sub || exit",
    "pushd sub >/dev/null", "( cd sub )", "cd sub && :", "go() { cd sub; }; go", "cd() { builtin cd sub; }",
    "export() { :; }; export IMG=/exp.sif", "IFS=/", "set -- /evil.sif", "alias x=y",
    "shopt -s expand_aliases; alias apptainer='apptainer run /evil.sif'",
    "eval \"shopt -s expand_aliases; alias apptainer='apptainer run /evil.sif'\"", "source $EVIL_FILE3",
    "trap 'rm -f /tmp/none' EXIT", "eval 'echo hi'",
]
_INITIAL = ["IMG=/good.sif", "", "export IMG=/good.sif", "IMG=good.sif", "declare -r IMG=/good.sif", "set -e",
            "IMG=/good.sif; IMG=/good.sif", "IMG=\"/good.sif\"", "IMG=$HOME/good.sif"]
_USES = ["apptainer run $IMG", "apptainer run \"$IMG\"", "apptainer run ${IMG:-/dflt.sif}", "apptainer run good.sif",
         "apptainer run /good.sif", "$RT run \"$IMG\"", "apptainer exec $OPTS \"$IMG\" true", "apptainer run $1",
         "apptainer run ./good.sif", "apptainer run ../good.sif"]
_WRAPS = ["{}", "if true; then {}; fi", "{{ {}; }}", "( {} )", "! {}", "for x in 1; do {}; done",
          "while true; do {}; break; done", "case y in y) {};; esac", "f@() {{ {}; }}; f@", "true && {}",
          "false || {}", "echo | {}", "x=$({})", "bash -c '{}'", "env A=1 {}", "command {}", "nice -n 1 {}",
          "timeout 60 {}", "srun {}", "time {}", "eval '{}'", "{} | cat",
          "for x in 1 2; do {}; IMG=/evil.sif; done", "for x in 1 2; do {}; cd sub; done",
          "bash <<EOF\n{}\nEOF", "bash <<'EOF'\n{}\nEOF", "echo '{}' | bash", "cd sub && {}", "env -C sub {}"]


def _bash_truth(tmp_path, script: str, extra_env: dict) -> list[str]:
    """Run the script with bash, a fake apptainer on PATH logging the image it is given."""
    bindir = tmp_path / "bin"
    log = tmp_path / "log"
    if not bindir.exists():
        bindir.mkdir()
        fake = bindir / "apptainer"
        fake.write_text(f'#!/bin/sh\nprintf "%s\\037" "$@" >> {log}.argv; echo >> {log}.argv\n'
                        'shift\nwhile [ "$#" -gt 1 ] && [ "${1#-}" != "$1" ]; do shift 2; done\n'
                        f'case "$1" in "") ;; /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac >> {log}\n')
        fake.chmod(0o755)
        launcher = bindir / "srun"
        launcher.write_text('#!/bin/sh\nexec "$@"\n')
        launcher.chmod(0o755)
        (tmp_path / "evil").write_text("/evil.sif\n")
        (tmp_path / "sub").mkdir()
        (tmp_path / "evil2").write_text("IMG=/evil.sif\n")
        (tmp_path / "evil3").write_text("shopt -s expand_aliases\nalias apptainer='apptainer run /evil.sif'\n")
    for f in (log, tmp_path / "log.argv"):
        if f.exists():
            f.unlink()
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path), "EVIL_FILE": str(tmp_path / "evil"),
           "EVIL_FILE2": str(tmp_path / "evil2"), "EVIL_FILE3": str(tmp_path / "evil3"), "RT": "apptainer",
           "OPTS": "-B /x", **extra_env}
    # its own process group: a generated script that loops in a subshell is ended whole
    proc = subprocess.Popen([BASH, "-c", script], env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if os.environ.get("SCAN_LOG_TIMEOUTS"):
            with open(os.environ["SCAN_LOG_TIMEOUTS"], "a") as f:
                f.write(repr(script) + "\n")
        return None             # a generated script that loops: no verdict
    return [os.path.normpath(x) for x in log.read_text().splitlines() if x] if log.exists() else []


@pytest.mark.skipif(BASH is None, reason="needs bash as the reference")
@settings(max_examples=int(os.environ.get("SCAN_PROPERTY_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_INITIAL), st.sampled_from([{}, {"IMG": "/fromenv.sif"}, {"IMG": ""}]),
       st.lists(st.sampled_from(_CHANGES), max_size=3), st.sampled_from(_USES),
       st.lists(st.sampled_from(_WRAPS), max_size=3))
def test_property_bash_runs_what_the_scanner_resolves(tmp_path, initial, job_env, changes, use, wraps):
    inv = use
    for k, w in enumerate(wraps):
        if "'" in w and "'" in inv:
            continue
        inv = w.replace("@", str(k)).format(inv)
    script = "\n".join([initial, *changes, inv]) + "\n"
    env = {"HOME": str(tmp_path), "EVIL_FILE": str(tmp_path / "evil"), "EVIL_FILE2": str(tmp_path / "evil2"),
           "EVIL_FILE3": str(tmp_path / "evil3"), "RT": "apptainer", "OPTS": "-B /x", **job_env}
    r = scan("#!/bin/bash\n" + script, env, str(tmp_path))
    ran = _bash_truth(tmp_path, script, job_env)
    assume(ran is not None)
    for f in r.images:           # resolved: every run of the runtime got exactly that image (none: dead code)
        assert {os.path.realpath(x) for x in ran} <= {os.path.realpath(f.image)}, (script, f.image, ran)
    if len(ran) == 1 and not r.unresolved and not r.errors:
        assert [os.path.realpath(f.image) for f in r.images] == [os.path.realpath(x) for x in ran], (script, ran)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_CHANGES + _USES + _WRAPS + ["\n", ";", "&&", "|", "'", '"', "$(", ")", "{", "}",
                                                             "<<EOF", "EOF", "\\", "#", "`"]), max_size=25)
       .map(" ".join) | st.text(max_size=400))
def test_scanner_never_raises_and_never_invents(script):
    r = scan(script, {"HOME": "/h"}, "/w")
    for f in r.images:
        assert f.image.endswith(".sif") or "://" in f.image or f.tool in ("apptainer", "singularity"), f


_PIECES = ["/a", "b", ".sif", "'/q d'", "'x'", '"/dq"', '"$V"', "$V", "${V}", "${V:-/dflt}", "${U:-/u}", "${U-x}",
           "${V:+/alt}", "$'\\x2fansi'", "\\ ", "\\*", "*", "?", "[ab]", "{a,b}", "~/", "~", "$SP", '"$SP"',
           "$GL", "${GL}", '"$GL"', "$E", '"$E"', "''", '""', "\\$V", "'$V'", "$1", "x=y", "--", "-B", ":~/h"]


@pytest.mark.skipif(BASH is None, reason="needs bash as the reference")
@settings(max_examples=int(os.environ.get("SCAN_PROPERTY_EXAMPLES", "250")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=4), st.booleans())
def test_property_word_expansion_matches_bash(tmp_path, pieces, assigned):
    """One word built from quoting/expansion pieces: resolved means bash passes exactly those words."""
    word = "".join(pieces)
    head = "V=/val\nSP='/s p'\nGL='/g*'\nE=\n" if assigned else ""
    script = f"{head}apptainer run {word}\n"
    env = {} if assigned else {"V": "/val", "SP": "/s p", "GL": "/g*", "E": ""}
    r = scan("#!/bin/bash\n" + script, dict(env, HOME=str(tmp_path)), str(tmp_path))
    assume(_bash_truth(tmp_path, script, env) is not None)
    argv_log = tmp_path / "log.argv"
    runs = [line.split("\x1f")[:-1] for line in argv_log.read_text().splitlines()] if argv_log.exists() else []
    for f in r.found:
        if f.resolved:          # the words the scanner resolved are the words bash passed
            assert runs == [list(f.argv[1:])], (script, f.argv, runs)


def test_names_missing_from_an_unreadable_environment_are_uncertain():
    """When the job's stored environment could not be read, a name it lacks may still be set
    when the job runs: deferred, never resolved as unset. Slurm-set names missing from the
    stored environment are uncertain too."""
    script = "apptainer run $SCRATCH/x.sif cmd\napptainer run $SLURM_SUBMIT_DIR/y.sif cmd\n"
    assert [f.image for f in scan(script, {"HOME": "/h"}, "/w").images] == ["/x.sif"]
    r = scan(script, {"HOME": "/h"}, "/w", env_complete=False)
    assert not r.images and len(r.unresolved) == 2
    r = scan(script, {"HOME": "/h", "SCRATCH": "/s", "SLURM_SUBMIT_DIR": "/sub"}, "/w", env_complete=False)
    assert [f.image for f in r.images] == ["/s/x.sif", "/sub/y.sif"]


@pytest.mark.parametrize("line", ["command -p apptainer run /a.sif cmd", "builtin command -p apptainer run /a.sif cmd",
                                  "env -u PATH apptainer run /a.sif cmd", "env --unset=PATH apptainer run /a.sif cmd",
                                  "env -uPATH apptainer run /a.sif cmd", "env - apptainer run /a.sif cmd",
                                  "env -i apptainer run /a.sif cmd"])
def test_lookups_that_skip_the_jobs_path_are_not_via_path(line):
    """These find the runtime in a default path, never the shim at the head of the job's PATH."""
    fs = [f for f in scan(line, {"HOME": "/h"}, "/w").found if f.tool]
    assert fs and all(not f.via_path for f in fs), fs
