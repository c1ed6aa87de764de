"""Find every container invocation in a batch script or srun command line (pure).

The script is parsed with tree-sitter-bash and every command in every construct is
judged: lists, pipelines, `!`, if/elif/else, loops, case, `{ }`, subshells, function
bodies, command and process substitutions, redirections, here-documents. Launchers and
wrappers are peeled (`command_wrappers`); text handed to another shell — `bash -c STR`,
`bash <<EOF`, `bash <<< STR`, `echo STR | sh`, `eval STR`, `trap STR` — is scanned as a
script of its own when it is static. A runtime named by its basename (`apptainer`,
`singularity`, also by absolute path or through a variable whose value is certain),
`run-singularity IMG` and a `*.sif` path executed directly are findings; their argv goes
to `runtime_argv.parse`.

The rule: what the scanner cannot resolve with certainty is deferred — reported with
`resolved=False` and a note (the controller logs it; the task shim and SPANK hook see the
real call) — never resolved to a guess. Variable and working-directory certainty are in
`shell_facts`; a parse with ERROR/MISSING nodes makes every finding of that text deferred.

Why tree-sitter-bash: a maintained (tree-sitter org), error-tolerant C parser shipped as
wheels, covering the whole bash grammar (case, here-docs, functions, `[[ ]]`, arithmetic,
process substitution), and fast (a 10 000-line script parses in milliseconds). bashlex is
unmaintained, has no `case`/arithmetic-command support and raises on much valid bash; a
hand-written lexer is what missed the constructs this replaces. Where the grammar is known
to diverge from bash (touching word nodes, several here-documents on one line) the scanner
detects the shape and defers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from sifguard.slurm import runtime_argv
from sifguard.slurm import shell_parse as sp
from sifguard.slurm.command_wrappers import ALL_NAMES, Deferred, Step, unwrap
from sifguard.slurm.shell_facts import RUNTIME_PREFIXES, SHELL_SET, TRUSTED_RUNTIME, Facts, collect, strip_prefixes
from sifguard.slurm.shell_words import UNSET, Dyn, fields, heredoc_text, scalar

MAX_SCRIPT = 1 << 20        # bytes; larger scripts are deferred whole
MAX_DEPTH = 4               # nested bash -c / here-doc / eval text
MAX_NEST = 200              # syntax-tree nesting walked
MAX_FOUND = 1000

SHELLS = {"bash", "sh", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh", "ksh93", "rbash"}
RUNNERS = set(runtime_argv.TOOLS) | {"run-singularity"}
# commands that take file names as data: naming an image to them runs nothing
DATA_COMMANDS = {
    "echo", "printf", "cat", "ls", "stat", "file", "test", "[", "cp", "mv", "rm", "ln", "mkdir", "rmdir", "touch",
    "chmod", "chown", "chgrp", "du", "df", "head", "tail", "less", "more", "grep", "egrep", "fgrep", "sed", "awk",
    "wc", "md5sum", "sha1sum", "sha256sum", "sha512sum", "b2sum", "cksum", "realpath", "readlink", "basename",
    "dirname", "which", "type", "hash", "whereis", "module", "ml", "rsync", "scp", "tar", "gzip", "zstd", "cmp",
    "diff", "mktemp", "install", "sifguard", "dd", "truncate", "sync", "logger", "export", "unset", "local",
    "declare", "readonly", "true", "false", ":", "exit", "return", "sleep", "date", "hostname", "id", "cd",
    "pushd", "popd", "alias", "shopt", "set", "read", "wait", "kill", "sbcast", "sattach", "scontrol", "squeue",
}
_COULD_INVOKE = re.compile(r"apptainer|singularity|sif|[$`]|eval|source|\bsh\b|bash|zsh|ksh|srun|mpi|prun|"
                           r"xargs|exec|find|(^|[\s;&|(])\.\s")
_SENT = "\0dyn"
_NAMES_RUNTIME = re.compile(r"apptainer|singularity|\.sif")
_MENTIONS_RUNTIME = re.compile(r"(^|[\s/;&|(`'\"])(apptainer|singularity|run-singularity)(\s|$)|\.sif(\s|$|[;&|)'\"])")
_SBATCH_CONTAINER = re.compile(r"^#SBATCH\s+.*--container(-id)?([=\s]|$)", re.M)
_SPECIAL = {"eval", "trap", "source", "."}
_RESERVED = {"if", "then", "elif", "else", "fi", "do", "done", "case", "esac", "while", "until", "for", "in",
             "select", "function", "{", "}", "[[", "]]", "!", "time", "coproc"} - {"time"}


@dataclass
class Found:
    line: int
    text: str                  # the command as written
    image: str | None = None   # resolved image (absolute path or URI)
    tool: str = ""             # apptainer | singularity | sif (executed directly)
    command: str = ""
    resolved: bool = True
    note: str = ""
    program: str = ""          # the program word as written/resolved ("apptainer", "/usr/bin/apptainer", "./x.sif")
    error: str = ""            # the runtime's command line is malformed (a fully static line): refuse
    argv: tuple = ()           # the runtime argv as resolved (unknown words as written)
    path_changed: bool = False  # the script (or this command's env/prefix) changes PATH or the hash table

    @property
    def via_path(self) -> bool:
        """Called by bare name through the job's unchanged PATH (where the sifguard shim sits)."""
        return bool(self.program) and "/" not in self.program and not self.path_changed


@dataclass
class Scan:
    found: list[Found] = field(default_factory=list)

    @property
    def images(self) -> list[Found]:
        return [f for f in self.found if f.resolved and f.image]

    @property
    def unresolved(self) -> list[Found]:
        return [f for f in self.found if not f.resolved]

    @property
    def errors(self) -> list[Found]:
        return [f for f in self.found if f.resolved and f.error]


def scan(script: str, env: dict | None = None, cwd: str = "/", env_complete: bool = True) -> Scan:
    """Every container invocation in `script` run with submission environment `env` in
    directory `cwd`. Never raises on any text. `env_complete=False`: `env` is not the whole
    environment the job will run with (it could not be read), so a name missing from it is
    uncertain, not unset."""
    env = dict(env or {})
    out: list[Found] = []
    interp, posix, startup, errexit = _shebang(script)
    if interp is not None and interp not in SHELLS:
        out.append(Found(1, script.split("\n", 1)[0][:200], resolved=False,
                         note=f"the script is run by {interp}, not a shell: left to the runtime hooks"))
        return Scan(out)
    if env.get("BASH_ENV") and interp != "sh":
        startup = True
    exported = {k[len("BASH_FUNC_"):].rstrip("%").rstrip("()") for k in env if k.startswith("BASH_FUNC_")}
    try:
        _Scanner(out, script, _env_base(env, startup, env_complete), cwd, 0, 1, frozenset(), startup, posix, env,
                 errexit, frozenset(exported)).run()
    except RecursionError:
        out.append(Found(1, "", resolved=False, note="the script nests too deeply to scan: left to the runtime hooks"))
    return Scan(out)


def _shebang(script: str) -> tuple[str | None, bool, bool, bool]:
    """(interpreter basename or None, aliases expand (POSIX mode), startup files run, errexit)."""
    if not script.startswith("#!"):
        return None, False, False, False
    words = script.split("\n", 1)[0][2:].split()
    if not words:
        return None, False, False, False
    if os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-") or w in ("-l", "--login", "-i")]
        words = [os.path.basename(words[0]) if words else "env", *words[1:]]
    interp = os.path.basename(words[0])
    opts = " ".join(words[1:])
    posix = interp != "bash" or "--posix" in opts or "-o posix" in opts
    startup = bool(re.search(r"(^|\s)(-[a-zA-Z]*[li][a-zA-Z]*|--login)(\s|$)", opts))
    errexit = bool(re.search(r"(^|\s)-[a-zA-Z]*e[a-zA-Z]*(\s|$)", opts))
    return interp, posix, startup, errexit


def _env_base(env: dict, startup: bool, complete: bool = True):
    def base(name: str):
        if startup:
            return None
        if name.startswith(RUNTIME_PREFIXES) and name not in TRUSTED_RUNTIME:
            return None
        if name in SHELL_SET:
            return None
        if name in env:
            return env[name]
        if not complete or name in TRUSTED_RUNTIME:
            return None         # set at run time, or in an environment we could not read
        if name in ("HOME", "USER", "LOGNAME", "SHELL", "LANG", "TERM", "MAIL") or name.startswith("LC_"):
            return None         # the system may set these at run time
        return UNSET
    return base


_NO = object()   # no working-directory override from an enclosing `cd … &&` chain


class _Scanner:
    src = b""
    path_here = False
    aliases = None

    def __init__(self, out, text, base, cwd, depth, line0, functions, startup, posix, env, errexit=False,
                 opaque=frozenset()):
        self.out, self.text, self.base, self.cwd0, self.opaque = out, text, base, cwd, opaque
        self.depth, self.line0, self.inherited, self.startup, self.posix = depth, line0, functions, startup, posix
        self.env, self.errexit = env, errexit

    # -- entry -----------------------------------------------------------------------------
    def run(self) -> None:
        src = self.text.encode("utf-8", "surrogateescape")
        if len(src) > MAX_SCRIPT:
            self.defer_text(1, self.text[:200], f"script larger than {MAX_SCRIPT} bytes")
            return
        if self.depth > MAX_DEPTH:
            self.defer_text(self.line0, self.text[:200], "shell text nested too deeply")
            return
        self.src = src
        self.path_here = False
        self.unseen_told = False
        self.gaps: list = []        # commands named by a reserved word: the grammar read bash differently
        tree = sp.parse(src)
        root = tree.root_node
        self.facts: Facts = collect(src, root, self.base, self.cwd0, inherited_functions=self.inherited,
                                    opaque_functions=self.opaque, startup=self.startup, posix=self.posix,
                                    errexit=self.errexit, aliases=self.aliases)
        start = len(self.out)
        if self.depth == 0:
            for m in _SBATCH_CONTAINER.finditer(self.text):
                self.defer_text(self.text.count("\n", 0, m.start()) + 1, m.group(0),
                                "#SBATCH --container runs the job in an OCI bundle through the site's runtime")
        self.walk(root, _NO, 0)
        bad = sp.broken(root) + self.gaps + self.facts.gaps
        if bad:
            where = ", ".join(str(self.line0 + b.start_point.row) for b in bad[:5])
            why = f"the parser could not read this script around line {where}"
            for f in self.out[start:]:
                if f.resolved:
                    f.resolved = False
                    f.note = "; ".join(x for x in (why, f"image as parsed: {f.image}" if f.image else "",
                                                   f"error: {f.error}" if f.error else "", f.note) if x)
                    f.error, f.image = "", None
            for b in bad[:10]:
                t = sp.node_text(src, b)
                if _COULD_INVOKE.search(t) or b.is_missing:
                    self.defer_text(self.line0 + b.start_point.row, t[:300], why)

    # -- results ---------------------------------------------------------------------------
    def add(self, f: Found) -> None:
        if len(self.out) >= MAX_FOUND:
            if not self.out[-1].note.startswith("too many"):
                self.out.append(Found(f.line, "", resolved=False, note="too many container commands: "
                                      "the rest is left to the runtime hooks"))
            return
        f.text = f.text[:2000]
        f.path_changed = f.path_changed or self.path_here or (self.facts.path_changed if self.src else False)
        self.out.append(f)

    def defer_text(self, line: int, text: str, note: str, **kw) -> None:
        self.add(Found(line, text, resolved=False, note=f"{note}: left to the runtime hooks", **kw))

    def line(self, n) -> int:
        return self.line0 + n.start_point.row

    # -- walking ---------------------------------------------------------------------------
    def walk(self, n, cwd, nest: int, stdin=None) -> None:
        if nest > MAX_NEST:
            t = sp.node_text(self.src, n)
            if _COULD_INVOKE.search(t):
                self.defer_text(self.line(n), t[:300], "constructs nested too deeply")
            return
        t = n.type
        if t == "command":
            self.command(n, cwd, stdin)
            for c in n.named_children:
                self.walk(c, cwd, nest + 1)
        elif t == "redirected_statement":
            self.redirected(n, cwd, nest)
        elif t == "pipeline":
            self.pipeline(n.named_children, cwd, nest, stdin)
        elif t == "list":
            self.chain(n, cwd, nest)
        elif t == "function_definition":
            for c in n.named_children:
                self.walk(c, _NO, nest + 1)
        else:
            for c in n.named_children:
                self.walk(c, cwd, nest + 1)

    def chain(self, n, cwd, nest: int) -> None:
        """`a && b || c` (equal precedence, left to right): a `cd DIR &&` sets the directory
        for the rest of its && chain; past an `||` after it, the directory is not certain."""
        cur, changed = cwd, False
        items = list(_flatten_list(n))
        for i, c in enumerate(items):
            if not c.is_named:
                if c.type == "||" and changed:
                    cur = None
                continue
            self.walk(c, cur, nest + 1)
            nxt = items[i + 1] if i + 1 < len(items) else None
            if c.type == "command" and nxt is not None and nxt.type == "&&":
                d = self.cd_target(c, cur)
                if d is not _NO:
                    cur, changed = d, True

    def cd_target(self, n, cwd):
        words = strip_prefixes(self.argv_of(n))
        if not words or words[0] != "cd":
            return _NO
        rest = [w for w in words[1:] if w not in ("-L", "-P", "--")]
        base = self.cwd_for(n, cwd)
        if len(rest) != 1 or not isinstance(rest[0], str) or base is None or rest[0] == "-":
            return None
        t = rest[0]
        if not t.startswith(("/", "./", "../")) and t not in (".", "..") and \
                ("CDPATH" in self.facts.writes or self.base("CDPATH") is not UNSET):
            return None
        if (self.facts.physical or "-P" in words) and ".." in t.split("/"):
            return None         # physical cd: `..` after a symlink is not lexical
        return os.path.normpath(os.path.join(base, t))

    def pipeline(self, elems, cwd, nest: int, stdin=None, last=_NO) -> None:
        feed = stdin
        for i, e in enumerate(elems):
            if i == len(elems) - 1 and last is not _NO:
                feed = last
            if e.type == "command":
                self.walk(e, cwd, nest + 1, feed)
                feed = self.output_of(e, feed)
            elif e.type == "redirected_statement":
                self.redirected(e, cwd, nest, feed)
                feed = None
            else:
                self.walk(e, cwd, nest + 1)
                feed = None

    def redirected(self, n, cwd, nest: int, stdin=None) -> None:
        body = n.child_by_field_name("body")
        feed, extra = stdin, []
        for r in n.children_by_field_name("redirect"):
            if r.type == "heredoc_redirect":
                feed = self.heredoc(r)
                extra += [c for c in r.named_children if c.type in ("pipeline", "list", "redirected_statement",
                                                                   "command")]
                if any(d.type == "heredoc_redirect" for c in extra for d in _descendants(c)):
                    t = sp.node_text(self.src, n)
                    if _COULD_INVOKE.search(t):
                        self.defer_text(self.line(n), t[:300], "several here-documents on one line")
                    return
            elif r.type == "herestring_redirect":
                w = r.named_children[-1] if r.named_children else None
                v = scalar(self.src, w, self.facts.lookup) if w is not None else None
                feed = None if v is None else v + "\n"
            elif r.type == "file_redirect" and sp.node_text(self.src, r).lstrip("0123456789").startswith("<"):
                feed = None
        if body is not None:
            if body.type == "command":
                self.walk(body, cwd, nest + 1, feed)
            elif body.type == "pipeline":        # `a | b <<EOF`: the redirection is b's
                self.pipeline(body.named_children, cwd, nest, stdin, last=feed)
            else:
                self.walk(body, cwd, nest + 1)
        for r in n.children_by_field_name("redirect"):
            for c in r.named_children:
                if c not in extra:
                    self.walk(c, cwd, nest + 1)
        for c in extra:         # `cat <<EOF | bash`: the grammar hangs the rest of the line on the here-doc
            if c.type == "pipeline":
                out = self.output_of(body, feed) if body is not None and body.type == "command" else None
                self.pipeline(c.named_children, cwd, nest + 1, out)
            else:
                self.walk(c, cwd, nest + 1)

    def heredoc(self, r) -> str | None:
        start = next((c for c in r.children if c.type == "heredoc_start"), None)
        body = next((c for c in r.children if c.type == "heredoc_body"), None)
        if start is None:
            return None
        if body is None:
            return ""
        delim = sp.node_text(self.src, start)
        strip = any(c.type == "<<-" for c in r.children)
        t = heredoc_text(self.src, body, self.facts.lookup, expand=not re.search(r"['\"\\]", delim),
                         strip_tabs=strip)
        if t is None:
            return None
        fed = _Fed(t)
        fed.line = self.line(body)
        return fed

    # -- one simple command ----------------------------------------------------------------
    def argv_of(self, n) -> list:
        name = n.child_by_field_name("name")
        if name is None:
            return []
        nodes = [name.named_children[0] if name.named_children else name, *n.children_by_field_name("argument")]
        argv: list = []
        for w in nodes:
            r = fields(self.src, w, self.facts.lookup, ifs_certain=not self.facts.ifs_changed)
            argv += r if isinstance(r, list) else [r]
        return argv

    def cwd_for(self, n, override):
        if override is not _NO:
            return override
        if sp.enclosing_start(n, frozenset({"function_definition"})) is not None:
            return self.cwd0 if not self.facts.cwd_events else None
        return self.facts.cwd_at(n.start_byte)

    def command(self, n, cwd_override, stdin) -> None:
        name = n.child_by_field_name("name")
        if name is None:
            return
        text = sp.node_text(self.src, n)
        nodes = [name.named_children[0] if name.named_children else name, *n.children_by_field_name("argument")]
        line = self.line(nodes[0])
        if sp.node_text(self.src, nodes[0]) in _RESERVED or sp.dropped_bytes(self.src, n):
            self.gaps.append(n)
            return
        if sp.suspect(self.src, nodes):
            if _COULD_INVOKE.search(text):
                self.defer_text(line, text, "the parser split a word that bash keeps whole")
            return
        head = fields(self.src, nodes[0], self.facts.lookup, ifs_certain=not self.facts.ifs_changed)
        if isinstance(head, list) and len(head) == 1 and self.plain(head[0], n) and not _NAMES_RUNTIME.search(text):
            return          # an ordinary program given nothing that looks like a container: nothing to judge
        argv = self.argv_of(n)
        if not argv:
            return
        pos = n.start_byte
        for r in n.named_children:      # the grammar keeps `<<< word` and `< file` on the command
            if r.type == "herestring_redirect":
                w = r.named_children[-1] if r.named_children else None
                v = scalar(self.src, w, self.facts.lookup) if w is not None else None
                stdin = None if v is None else v + "\n"
            elif r.type == "file_redirect" and sp.node_text(self.src, r).lstrip("0123456789").startswith("<"):
                stdin = None
        after_time = strip_prefixes(argv[:1] + argv[1:]) if argv[0] == "time" else []
        if self.facts.aliased(argv[0], sp.use_pos(n)) or (  # the word after `time` is in command position
                after_time and self.facts.aliased(after_time[0], sp.use_pos(n))):
            if not self.facts.unseen_code_before(sp.use_pos(n)):
                self.defer_text(line, text, "aliases may rewrite this command")
            elif _NAMES_RUNTIME.search(text) or not self.unseen_told:
                # one note for the region, and one per command that names a runtime or an image
                self.unseen_told = True
                self.defer_text(line, text, "code the scanner cannot read ran before this (source, eval, a "
                                "startup file, a function from the environment): aliases may rewrite this and "
                                "every later command")
            return
        cwd = self.cwd_for(n, cwd_override)
        if self.shadowed(argv[0], n, line, text):
            return
        prefix_path = any(c.type == "variable_assignment" and
                          sp.node_text(self.src, c).startswith(("PATH=", "PATH+=")) for c in n.named_children)
        for step in unwrap(argv):
            self.path_here = prefix_path or (isinstance(step, Step) and step.path_changed)
            if isinstance(step, Deferred):
                if _COULD_INVOKE.search(text):
                    self.defer_text(line, text, step.note)
                continue
            self.judge(step, n, line, text, cwd, stdin, pos)
        self.path_here = False

    def shadowed(self, head, n, line: int, text: str) -> bool:
        """True when `head` calls one of the script's functions (judged where it is defined);
        a function that stands in for a runtime, launcher or shell makes the call deferred."""
        if not isinstance(head, str) or "/" in head or head not in self.facts.functions:
            return False
        if head in RUNNERS or head in ALL_NAMES or head in SHELLS or head.endswith(".sif") or head in _SPECIAL:
            self.defer_text(line, text, f"calls the script's own function '{head}', which shadows the command",
                            program=head)
        return True

    def plain(self, head: str, n) -> bool:
        base = os.path.basename(head)
        return not (base in RUNNERS or base in ALL_NAMES or base in SHELLS or base in _SPECIAL or
                    head.endswith(".sif") or head in self.facts.functions or
                    self.facts.aliased(head, sp.use_pos(n)))

    def judge(self, st: Step, n, line: int, text: str, cwd, stdin, pos: int) -> None:
        head = st.argv[0]
        if isinstance(head, Dyn):
            self.defer_text(line, text, f"the command is named at run time ({head.raw}: {head.why})")
            return
        for d in st.chdir:
            cwd = None if cwd is None or not isinstance(d, str) else kernel_join(cwd, d)
        if st.cwd_unknown:
            cwd = None
        base = os.path.basename(head)
        if st.via and not st.bypass_functions and self.shadowed(head, n, line, text):
            return
        if st.external and head in _SPECIAL:
            self.defer_text(line, text, f"{head} is a shell builtin, but a program runs it here")
            return
        if base in RUNNERS:
            rargv = ["singularity", "run", *st.argv[1:]] if base == "run-singularity" else list(st.argv)
            self.runtime(rargv, st, line, text, cwd, head, pos)
        elif head.endswith(".sif"):
            if "/" not in head:
                self.defer_text(line, text, f"{head} is looked up through PATH", tool="sif", program=head)
            elif cwd is None and not head.startswith("/"):
                self.defer_text(line, text, "relative image and the working directory is not certain",
                                tool="sif", program=head)
            else:
                self.add(Found(line, text, kernel_join(cwd or "/", head), "sif", "run",
                               program=head, argv=tuple(_show(a) for a in st.argv), note=self.note_for(n.start_byte)))
        elif base in SHELLS:
            self.shell(st, n, line, text, cwd, stdin, pos)
        elif base == "eval":
            self.nested(st.argv[1:], line, text, cwd, pos, "eval", same_shell=True)
        elif base == "trap":
            args = st.argv[1:]
            if args and args[0] == "--":
                args = args[1:]
            if len(args) >= 2 and not (isinstance(args[0], str) and (args[0].startswith("-") or args[0] == "")):
                self.nested(args[:1], line, text, cwd, pos, "trap", same_shell=True)
        elif base in ("source", "."):
            if len(st.argv) > 1:
                self.defer_text(line, text, f"sources {_show(st.argv[1])}, which the scanner does not read")
        elif base not in DATA_COMMANDS and base not in self.facts.functions:
            for a in st.argv[1:]:
                if isinstance(a, str) and (os.path.basename(a) in RUNNERS or _MENTIONS_RUNTIME.search(a)):
                    self.defer_text(line, text, f"{base} is given {a[:80]!r}; the scanner does not model {base}")
                    break

    def note_for(self, pos: int) -> str:
        notes = []
        if self.facts.barrier_before(pos) or self.facts.startup:
            notes.append("code the scanner does not read (source, eval, a startup file) runs before this: "
                          "a shell function may stand in for the command")
        if self.facts.path_changed:
            notes.append("the script changes PATH or the command hash")
        return "; ".join(notes)

    def runtime(self, rargv: list, st: Step, line: int, text: str, cwd, program: str, pos: int) -> None:
        tool = os.path.basename(rargv[0])
        many = next((i for i, a in enumerate(rargv) if isinstance(a, Dyn) and not a.one), None)
        upto = rargv if many is None else rargv[:many]
        probe = [a if isinstance(a, str) else f"{_SENT}{i}" for i, a in enumerate(upto)]
        dyn_at = {i for i, a in enumerate(upto) if isinstance(a, Dyn)}
        shown = tuple(_show(a) for a in rargv)
        try:
            inv = runtime_argv.parse(probe)
        except Exception as e:  # noqa: BLE001 - a parser bug must not stop the scan: defer
            self.defer_text(line, text, f"the runtime's command line could not be read ({e})", tool=tool,
                            program=program, argv=shown)
            return
        kw = dict(tool=tool, command=inv.command, program=program, argv=shown)
        if _SENT in (inv.command or ""):
            self.defer_text(line, text, "the runtime's subcommand is computed at run time", **kw)
            return
        if inv.error:
            if many is not None:
                w = rargv[many]
                self.defer_text(line, text, f"{w.raw} may expand to any number of words ({w.why})", **kw)
            elif dyn_at or st.more_args:
                self.defer_text(line, text, f"{inv.error} (with words known only at run time)", **kw)
            else:
                self.add(Found(line, text, None, tool, inv.command, True, "", program, inv.error, shown))
            return
        if not inv.runs_image:
            if many is not None and inv.command in ("", "instance"):
                self.defer_text(line, text, f"{rargv[many].raw} may hold the runtime's subcommand", **kw)
            return
        idx = inv.image_index
        if idx is None:
            self.defer_text(line, text, "no image operand", **kw)
            return
        if idx in dyn_at:
            w = rargv[idx]
            self.defer_text(line, text, f"image {w.raw} is computed at run time ({w.why})", **kw)
            return
        image = rargv[idx]
        if "://" not in image:
            if not image.startswith("/") and cwd is None:
                self.defer_text(line, text, f"relative image {image} and the working directory is not certain", **kw)
                return
            image = kernel_join(cwd or "/", image)
        self.add(Found(line, text, image, tool, inv.command, True, self.note_for(pos), program, "", shown))

    def shell(self, st: Step, n, line, text, cwd, stdin, pos) -> None:
        args = st.argv[1:]
        i, want_c, startup, from_stdin = 0, False, False, False
        while i < len(args):
            a = args[i]
            if isinstance(a, Dyn):
                self.defer_text(line, text, f"shell option {a.raw} is computed at run time")
                return
            if a in ("--", "-"):
                i += 1
                break
            if a.startswith("--"):
                if a in ("--rcfile", "--init-file"):
                    i += 2
                    continue
                if a == "--login":
                    startup = True
                elif a not in ("--norc", "--noprofile", "--posix", "--restricted", "--verbose", "--noediting",
                               "--debugger", "--dump-strings", "--dump-po-strings", "--pretty-print"):
                    self.defer_text(line, text, f"unknown shell option {a}")
                    return
                i += 1
                continue
            if a[:1] in "-+" and len(a) > 1:
                values = 0
                for ch in a[1:]:
                    if ch == "c":
                        want_c = True
                    elif ch in "oO":
                        values += 1
                    elif ch in "li":
                        startup = True
                    elif ch == "s":
                        from_stdin = True
                    elif ch not in "abefhkmnprtuvxBCEHPT":
                        self.defer_text(line, text, f"unknown shell option -{ch}")
                        return
                i += 1 + values
                continue
            break
        ops = args[i:]
        if self.facts.writes.get("BASH_ENV") or self.base("BASH_ENV") not in (UNSET, ""):
            startup = True
        child = self.facts.child_lookup(pos)
        if st.env_changed:      # `env IMG=… bash -c`, `srun --export=IMG=… bash -c`: nothing inherited is known
            child = _nothing_known
        if want_c:
            if not ops:
                return
            s = ops[0]
            if isinstance(s, Dyn):
                self.defer_text(line, text, f"the shell runs {s.raw}, computed at run time")
                return
            self.child(s, child, cwd, line, startup)
        elif ops and not from_stdin:
            self.defer_text(line, text, f"runs the script {_show(ops[0])}, which the scanner does not read")
        elif isinstance(stdin, str):
            self.child(stdin, child, cwd, getattr(stdin, "line", 0) or line, startup)
        else:
            self.defer_text(line, text, "the shell reads commands from an input the scanner cannot see")

    def nested(self, words: list, line, text, cwd, pos, what: str, same_shell: bool) -> None:
        if any(isinstance(w, Dyn) for w in words):
            self.defer_text(line, text, f"{what} of text computed at run time")
            return
        if not words:
            return
        look = self.facts.same_shell_lookup(pos) if same_shell else self.facts.child_lookup(pos)
        unseen = self.facts.unseen_code_before(pos)
        inner = _Scanner(self.out, " ".join(words), look, cwd, self.depth + 1, line,
                         frozenset(self.facts.functions - self.opaque), self.startup or unseen,
                         self.posix or self.facts.alias_enabled or unseen, self.env, False, self.opaque)
        inner.aliases = self.facts.aliases_at(pos)      # the same shell: its aliases apply
        inner.run()

    def child(self, text: str, look, cwd, line: int, startup: bool) -> None:
        # a child shell inherits only exported functions: those of the environment
        _Scanner(self.out, text, look, cwd, self.depth + 1, line, frozenset(), startup, self.posix, self.env,
                 False, self.opaque).run()

    def output_of(self, n, stdin) -> str | None:
        """What a command writes to a pipe, when it is certain (echo/printf/cat)."""
        if n is None or n.type != "command":
            return None
        name = n.child_by_field_name("name")
        if name is None or sp.node_text(self.src, name) not in ("echo", "printf", "cat"):
            return None
        argv = self.argv_of(n)
        if not argv or any(isinstance(a, Dyn) for a in argv):
            return None
        head, args = argv[0], argv[1:]
        if head == "echo":
            newline = True
            while args and re.match(r"^-[neE]+$", args[0]):
                if "e" in args[0]:
                    return None
                newline = newline and "n" not in args[0]
                args = args[1:]
            s = " ".join(args)
            return None if "\\" in s else s + ("\n" if newline else "")
        if head == "printf":
            if args and args[0] == "--":
                args = args[1:]
            if not args:
                return None
            fmt = args[0]
            if fmt in ("%s\\n", "%s\n"):
                return "".join(a + "\n" for a in args[1:])
            if "%" in fmt or re.search(r"\\[^nt\\]", fmt):
                return None
            return fmt.replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\")
        if head == "cat" and (not args or args == ["-"]):
            return stdin if isinstance(stdin, str) else None
        return None


def _nothing_known(name: str, node=None):
    return None


def kernel_join(cwd: str, path: str) -> str:
    """The path the kernel will open for `path` in `cwd`: `.` and repeated slashes go,
    `..` stays (after a symlink it does not undo the last component, so lexical
    normalisation could name a different file than the one the job opens)."""
    parts = [p for p in os.path.join(cwd, path).split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def _flatten_list(n):
    for c in n.children:
        if c.type == "list":
            yield from _flatten_list(c)
        else:
            yield c


class _Fed(str):
    """Text a command reads on its standard input, with the script line it starts on."""
    line = 0


def _show(a) -> str:
    return a.raw if isinstance(a, Dyn) else a


def _descendants(n):
    stack = [n]
    while stack:
        c = stack.pop()
        yield c
        stack.extend(c.children)
