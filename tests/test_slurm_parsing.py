"""The apptainer/singularity grammar and the job-script scanner, adversarial scripts included."""
import pytest


from sifguard.slurm import runtime_argv as ra
from sifguard.slurm.script_scan import scan


@pytest.mark.parametrize("argv,cmd,image", [
    ("apptainer exec img.sif ls", "exec", "img.sif"),
    ("/usr/bin/singularity run img.sif", "run", "img.sif"),
    ("apptainer --debug -q exec --nv -B /a:/b --bind=/c img.sif cmd", "exec", "img.sif"),
    ("apptainer -c /etc/conf exec img.sif ls", "exec", "img.sif"),
    ("apptainer exec -Bx:/y img.sif ls", "exec", "img.sif"),
    ("apptainer exec --env A=1 --home /h --pwd /w --overlay o.img img.sif ls", "exec", "img.sif"),
    ("apptainer exec -C -e --writable-tmpfs img.sif ls", "exec", "img.sif"),
    ("apptainer exec -- img.sif -B", "exec", "img.sif"),
    ("apptainer instance start -B /x img.sif name", "instance start", "img.sif"),
    ("apptainer instance run img.sif name", "instance run", "img.sif"),
    ("apptainer shell docker://alpine", "shell", "docker://alpine"),
    ("apptainer test oras://reg/x:1", "test", "oras://reg/x:1"),
    ("apptainer inspect img.sif", "inspect", "img.sif"),
    ("apptainer exec instance://web ls", "exec", "instance://web"),
])
def test_runs_image(argv, cmd, image):
    inv = ra.parse(argv.split())
    assert (inv.command, inv.image, inv.runs_image) == (cmd, image, True)
    assert argv.split()[inv.image_index] == image


@pytest.mark.parametrize("argv,cmd", [
    ("apptainer version", "version"), ("apptainer --version", "version"), ("apptainer help exec", "help"),
    ("apptainer -h", "help"), ("apptainer build x.sif docker://a", "build"), ("apptainer pull docker://a", "pull"),
    ("apptainer instance list", "instance list"), ("apptainer instance stop x", "instance stop"),
    ("apptainer cache clean", "cache clean"), ("apptainer", ""),
])
def test_runs_no_image(argv, cmd):
    inv = ra.parse(argv.split())
    assert inv.command == cmd and not inv.runs_image


def test_scheme_and_missing_image():
    assert ra.parse("apptainer run library://a/b/c".split()).scheme == "library"
    assert ra.parse("apptainer run ./x.sif".split()).scheme is None
    inv = ra.parse("apptainer exec --nv".split())
    assert inv.runs_image and inv.image is None and inv.error


def images(script, env=None, cwd="/work"):
    r = scan(script, env or {"HOME": "/home/u"}, cwd)
    return [f.image for f in r.images], r


def test_scanner_basics():
    got, _ = images("""#!/bin/bash
#SBATCH --partition=debug
# apptainer run /commented.sif
apptainer exec a.sif true
singularity run /abs/b.sif
./c.sif arg
srun -n 4 --cpu-bind=cores apptainer exec d.sif x
srun --mpi pmix -N 2 singularity exec /e.sif x
""")
    assert got == ["/work/a.sif", "/abs/b.sif", "/work/c.sif", "/work/d.sif", "/e.sif"]


def test_scanner_variables_and_environment():
    got, _ = images("""
IMG=$HOME/img.sif
export DATA=/data OTHER=x
apptainer exec $IMG x
apptainer exec ${DATA}/one.sif x
apptainer exec "${MISSING:-/fallback.sif}" x
apptainer exec $SLURM_SUBMIT_DIR/two.sif x
cd /scratch && apptainer run three.sif
""", {"HOME": "/home/u", "SLURM_SUBMIT_DIR": "/sub"})
    assert got == ["/home/u/img.sif", "/data/one.sif", "/fallback.sif", "/sub/two.sif", "/scratch/three.sif"]


def test_scanner_quoting_continuations_and_wrappers():
    got, _ = images("""
apptainer exec \\
    --bind /a:/b \\
    "/path with space/x.sif" cmd
env A=1 B=2 apptainer run /env.sif
command apptainer run /command.sif
exec apptainer run /exec.sif
time nice -n 5 apptainer run /nice.sif
timeout 10m apptainer run /timeout.sif
nohup apptainer run /nohup.sif &
true && apptainer run /and.sif || false; apptainer run /semi.sif | cat
bash -c "apptainer run /inner.sif"
echo 'apptainer run /quoted-not-run.sif'
echo "apptainer run /dq-not-run.sif"
apptainer run /redirect.sif > out.txt 2>&1 < /dev/null
""")
    assert got == ["/path with space/x.sif", "/env.sif", "/command.sif", "/exec.sif", "/nice.sif",
                   "/timeout.sif", "/nohup.sif", "/and.sif", "/semi.sif", "/inner.sif", "/redirect.sif"]


def test_scanner_heredocs_are_data():
    got, _ = images("cat > notes.txt <<'EOT'\napptainer run /in-heredoc.sif\nEOT\n"
                    "cat <<-END\n\tapptainer run /in-heredoc2.sif\n\tEND\napptainer run /after.sif\n")
    assert got == ["/after.sif"]


def test_scanner_single_quotes_do_not_expand():
    got, _ = images("X=/x.sif\napptainer run '$X'\n")
    assert got == ["/work/$X"]


def test_scanner_unresolvable_is_reported_not_guessed():
    got, r = images("""
eval "apptainer run $IMG"
apptainer exec $(cat which) echo
apptainer exec `cat which` echo
$RUNTIME exec /x.sif
apptainer run $UNSET_VAR/x.sif
IMG=$(mktemp); apptainer run $IMG
""")
    assert got == []
    # each of the 6 lines is deferred; since a dynamic `eval` may also define aliases, the
    # scanner adds one note that every later command is left to the runtime hooks
    assert {f.line for f in r.unresolved} == {2, 3, 4, 5, 6, 7} and all(f.note for f in r.unresolved)


def test_scanner_reassignment_and_dynamic_assignment():
    got, r = images("IMG=/first.sif\nIMG=$(pick)\napptainer run $IMG\n")
    assert got == [] and len(r.unresolved) == 1


def test_scanner_instance_and_uri():
    got, _ = images("apptainer instance start /i.sif web\napptainer run docker://alpine\n")
    assert got == ["/i.sif", "docker://alpine"]


def test_parse_show_job_values_with_spaces():
    from sifguard.slurm.jobinfo import parse_show_job
    line = ("JobId=7 JobName=my job UserId=alice(1001) GroupId=hpc(2000) Account=(null) Partition=debug "
            "Command=/home/alice/run me.sh WorkDir=/home/alice StdOut=/home/alice/slurm-7.out "
            "AdminComment=sifguard: job 7 refused: x BatchFlag=1")
    d = parse_show_job(line)
    assert d["JobName"] == "my job" and d["Command"] == "/home/alice/run me.sh"
    assert d["UserId"] == "alice(1001)" and d["Partition"] == "debug" and d["BatchFlag"] == "1"
    assert d["AdminComment"] == "sifguard: job 7 refused: x"


from hypothesis import given, settings, strategies as st  # noqa: E402

_TOKENS = st.sampled_from(["apptainer", "singularity", "exec", "run", "instance", "start", "srun", "-B", "--bind",
                           "x.sif", "$X", "${Y:-/d.sif}", "'q'", '"dq"', "\\", "\n", ";", "&&", "|", "<<EOF",
                           "EOF", "#", "$(a)", "`b`", "env", "A=1", "eval", "bash", "-c", " ", "--", "cd", "/"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_TOKENS, max_size=40).map(" ".join) | st.text(max_size=300))
def test_scanner_never_raises(script):
    """The prolog scans user-written scripts: any text yields findings, never an exception."""
    scan(script, {"HOME": "/h"}, "/w")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=12))
def test_argv_parser_never_raises(args):
    ra.parse(["apptainer", *args])
