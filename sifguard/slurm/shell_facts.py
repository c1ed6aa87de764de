"""What a script makes certain about its own variables, working directory, functions and
aliases (pure; a pass over the whole tree before any command is judged).

A variable's value is certain at a use only when it is assigned exactly once in the
whole script, at top level, unconditionally, with a static value, textually before the
use (for a use inside a function: before the function's definition), and never written
any other way — `read`, `for`/`select`, `mapfile`, `getopts`, `printf -v`, `wait -p`,
`unset`, `let`/arithmetic, `${V:=…}`, `local`/`declare` with attributes, assignments in
conditionals, loops, functions, subshells, pipelines or as a command prefix. A variable
the script never writes takes its value from the caller's `base` (the job's submission
environment, or the enclosing script for nested text). `eval`, `source`/`.`, `trap`,
`enable`, namerefs, a command named at run time, and arithmetic that may evaluate a
string are barriers: after one, no variable is certain. Code the scanner cannot read
(`source`, `eval`/`trap` of text that is not inert, a function from the environment such as
`module`, a login shell's profile or $BASH_ENV) may also turn on and define aliases, so
every later command is uncertain. The working directory follows the same rule with
`cd`/`pushd`/`popd`; a bare top-level `cd DIR` is certain only under `set -e` (or `cd DIR
|| exit`, or `cd DIR && …` for the rest of that chain, or when DIR is where the job already
is): bash goes on in the old directory when a cd fails.
"""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass, field
from typing import Callable

from sifguard.slurm import shell_parse as sp
from sifguard.slurm.shell_words import UNSET, Dyn, fields, scalar

# Names bash or Slurm set at run time, whatever the submission environment says.
SHELL_SET = frozenset("""BASH BASHOPTS BASHPID BASH_ALIASES BASH_ARGC BASH_ARGV BASH_ARGV0 BASH_CMDS BASH_COMMAND
    BASH_LINENO BASH_REMATCH BASH_SOURCE BASH_SUBSHELL BASH_VERSINFO BASH_VERSION COMP_WORDS DIRSTACK EPOCHREALTIME
    EPOCHSECONDS EUID FUNCNAME GROUPS HISTCMD HOSTNAME HOSTTYPE LINENO MACHTYPE OLDPWD OPTARG OPTIND OSTYPE
    PIPESTATUS PPID PWD RANDOM READLINE_LINE REPLY SECONDS SHELLOPTS SHLVL SRANDOM UID IFS PATH ENVIRONMENT
    TMPDIR CUDA_VISIBLE_DEVICES GPU_DEVICE_ORDINAL ROCR_VISIBLE_DEVICES ZE_AFFINITY_MASK MAPFILE
    COLUMNS LINES""".split())
RUNTIME_PREFIXES = ("SLURM", "PMI", "PMIX", "OMPI", "MPI", "BASH_FUNC_", "SINGULARITY", "APPTAINER")
# Slurm-set names whose value the controller knows (jobinfo fills them from the job record).
TRUSTED_RUNTIME = frozenset({"SLURM_SUBMIT_DIR", "SLURM_JOB_ID"})
BARRIER_COMMANDS = frozenset({"eval", "source", ".", "enable", "trap"})
# builtins whose effect on variables/directory the facts model: a function by that name voids the model
SHADOWS_STATE = frozenset({"cd", "pushd", "popd", "export", "declare", "typeset", "local", "readonly", "unset",
                           "read", "mapfile", "readarray", "getopts", "printf", "wait", "let", "set", "shopt",
                           "alias", "unalias", "builtin", "command", "hash", "enable", "source", "eval", "trap",
                           "exec", "true", ":"})
_INT = re.compile(r"^-?[0-9]+$")
_WORDS = frozenset({"word", "raw_string", "string", "ansi_c_string", "concatenation", "simple_expansion", "expansion",
                    "number", "translated_string"})
_CONTINUES = frozenset(b"\\'\"$")
_WORD_HOLDERS = frozenset({"command", "command_name", "declaration_command", "variable_assignment", "for_statement",
                           "case_item", "case_statement", "herestring_redirect", "file_redirect", "array",
                           "unset_command"})
_FD_VAR = re.compile(rb"\{([A-Za-z_][A-Za-z0-9_]*)\}[0-9]*$")
_NOLOOKUP: Callable = lambda name, node: None      # noqa: E731 - literal words only


@dataclass
class Write:
    pos: int                 # effective position
    end: int
    simple: bool = False     # top-level, unconditional, plain `=`
    node: object = None      # value node of a simple write (evaluated lazily)
    intlike: bool = False    # an integer (arithmetic result) whatever happens


@dataclass
class Facts:
    src: bytes
    base: Callable           # name -> str | UNSET | None, for names the script never writes
    start_cwd: str | None
    writes: dict = field(default_factory=dict)
    barriers: list = field(default_factory=list)       # positions after which no variable is certain
    cwd_events: list = field(default_factory=list)     # (pos, target str | None)
    functions: set = field(default_factory=set)
    alias_from: int | None = None                      # aliases may expand after this position
    alias_names: set | None = field(default_factory=set)   # None: any word may be an alias
    alias_seen: bool = False
    alias_enabled: bool = False
    ifs_changed: bool = False
    path_changed: bool = False
    arith_refs: list = field(default_factory=list)     # (pos, names) evaluated as arithmetic
    first_barrier: int = 0
    startup: bool = False
    opaque: frozenset = frozenset()                     # functions from the environment: bodies unseen
    code_barriers: list = field(default_factory=list)   # code the scanner cannot read runs here
    texts: list = field(default_factory=list)           # (pos, static eval/trap text): a barrier unless inert
    gaps: list = field(default_factory=list)            # words the grammar ended where bash does not
    physical: bool = False          # `set -P` / `cd -P`: `..` is not lexical
    errexit_from: int | None = None  # a top-level `set -e` (or `bash -e`) is in force after this
    errexit_off: bool = False       # `set +e` somewhere: errexit is not certain
    pending: list = field(default_factory=list)         # (pos, name node) of commands named at run time
    _pending_done: dict = field(default_factory=dict)
    _cwd_steps: list | None = None
    _cache: dict = field(default_factory=dict)
    _busy: set = field(default_factory=set)

    # -- queries -------------------------------------------------------------------------
    def barrier_before(self, pos: int) -> bool:
        if self.barriers and self.first_barrier < pos:
            return True
        return any(p < pos and self._pending_is_barrier(i) for i, (p, _) in enumerate(self.pending))

    def _pending_is_barrier(self, i: int) -> bool:
        """A command named through a variable is a barrier unless its name is certain and
        is not one that can change variables or the directory (`$RT run x` with RT=apptainer)."""
        if i in self._pending_done:
            return self._pending_done[i]
        self._pending_done[i] = True            # while evaluating: assume the worst
        p, node = self.pending[i]
        r = fields(self.src, node, lambda nm, _n: self.value_at(nm, p))
        ok = isinstance(r, list) and len(r) >= 1 and os.path.basename(r[0]) not in _INTERESTING \
            and r[0] not in self.functions and r[0] not in ("builtin", "command", "exec", "declare", "typeset",
                                                            "local", "export", "readonly", "unset")
        self._pending_done[i] = not ok
        return not ok

    def value_at(self, name: str, pos: int):
        """str | UNSET | None (not certain) for `$name` used at byte position pos."""
        if self.barrier_before(pos):
            return None
        ws = self.writes.get(name)
        if not ws:
            return self.base(name)
        if len(ws) != 1 or not ws[0].simple or ws[0].end > pos:
            return None
        w = ws[0]
        key = id(w)
        if key in self._cache:
            return self._cache[key]
        if key in self._busy:
            return None
        self._busy.add(key)
        try:
            v = UNSET if w.node is None else scalar(self.src, w.node, self.lookup)
        finally:
            self._busy.discard(key)
        self._cache[key] = v
        return v

    def lookup(self, name: str, node):
        return self.value_at(name, sp.use_pos(node))

    def child_lookup(self, pos: int) -> Callable:
        """Values a child shell started at pos inherits: only names the script never
        touches and that are certain in the base (exported script variables are not
        followed: deferred, never guessed)."""
        def look(name: str, node=None):
            if name in self.writes or self.barrier_before(pos):
                return None
            return self.base(name)
        return look

    def same_shell_lookup(self, pos: int) -> Callable:
        """Values text evaluated at pos in this same shell (eval, trap) sees."""
        return lambda name, node=None: self.value_at(name, pos)

    def cwd_at(self, pos: int) -> str | None:
        if self._cwd_steps is None:
            self._cwd_steps = self._cwd_walk()
        i = bisect.bisect_left(self._cwd_steps, pos, key=lambda e: e[0])
        return self.start_cwd if i == 0 else self._cwd_steps[i - 1][1]

    def _cwd_walk(self) -> list:
        steps, cwd = [], self.start_cwd
        for p, target in self.cwd_events:
            if cwd is None:
                steps.append((p, None))
                continue
            if isinstance(target, tuple):
                if not self._pending_is_barrier(target[1]):
                    steps.append((p, cwd))
                    continue
                target = None
            plain = isinstance(target, _Plain)
            if plain:
                target = target.t
            if cwd is not None and target is not None and not isinstance(target, str):   # a word with variables
                r = fields(self.src, target, lambda nm, _n, p=p: self.value_at(nm, p))
                target = r[0] if isinstance(r, list) and len(r) == 1 else None
            if target == "~":
                target = self.value_at("HOME", p)
                target = target if isinstance(target, str) and target else None
            if target is not None and not target.startswith(("/", "./", "../")) and target not in (".", "..") \
                    and ("CDPATH" in self.writes or self.base("CDPATH") is not UNSET):
                target = None           # CDPATH may send a relative cd elsewhere
            new = None if target is None or cwd is None else os.path.normpath(os.path.join(cwd, target))
            if plain and new != cwd and not (self.errexit_from is not None and self.errexit_from < p
                                             and not self.errexit_off):
                new = None                      # a failed cd leaves the old directory: not certain
            if self.physical and isinstance(target, str) and ".." in target.split("/"):
                new = None
            cwd = new
            steps.append((p, cwd))
        return steps

    def unseen_code_before(self, pos: int) -> bool:
        """Code the scanner cannot read (source, eval/trap of text that is not inert, a function
        from the environment, a startup file, a command named at run time that is not certain)
        ran before pos: it may have turned on alias expansion and defined any alias."""
        if any(b < pos for b in self.code_barriers):
            return True
        return any(p < pos and self._pending_is_barrier(i) for i, (p, _) in enumerate(self.pending))

    def aliases_at(self, pos: int) -> tuple | None:
        """The alias state text eval'd at pos starts with, or None when no alias can expand."""
        if self.unseen_code_before(pos):
            return (None,)
        if self.alias_enabled and self.alias_from is not None and self.alias_from < pos:
            return (None if self.alias_names is None else frozenset(self.alias_names),)
        return None

    def aliased(self, word, pos: int) -> bool:
        if self.unseen_code_before(pos):
            return True
        if not self.alias_enabled or self.alias_from is None or pos <= self.alias_from:
            return False
        return self.alias_names is None or not isinstance(word, str) or word in self.alias_names


def collect(src: bytes, root, base: Callable, start_cwd: str | None, *, inherited_functions=frozenset(),
            opaque_functions=frozenset(), startup: bool = False, posix: bool = False,
            errexit: bool = False, aliases: tuple | None = None, _depth: int = 0) -> Facts:
    """`aliases`: (names or None for any) already defined and expanding when this text starts
    (text eval'd in a shell that has them)."""
    f = Facts(src, base, start_cwd)
    if aliases is not None:
        f.alias_enabled, f.alias_from, f.alias_names = True, -1, (None if aliases[0] is None else set(aliases[0]))
    if errexit:
        f.errexit_from = -1
    f.functions |= set(inherited_functions) | set(opaque_functions)
    f.opaque = frozenset(opaque_functions)
    f.alias_enabled = posix
    if startup:     # a login shell's profile or $BASH_ENV runs first: nothing inherited is certain
        f.base = lambda name: None
        f.startup = True
        f.cwd_events.append((-1, None))
        f.code_barriers.append(-1)
    stack = [root]
    while stack:
        n = stack.pop()
        t = n.type
        if t in _WORDS and n.end_byte < len(src) and src[n.end_byte] in _CONTINUES and \
                src[n.end_byte:n.end_byte + 2] != b"\\\n" and n.parent is not None and n.parent.type in _WORD_HOLDERS:
            f.gaps.append(n)        # bash goes on with the word here; the grammar stopped (or dropped bytes)
        if t == "variable_assignment":
            _assignment(f, n)
        elif t == "declaration_command":
            _declaration(f, n)
        elif t == "unset_command":
            _unset(f, n)
        elif t == "command":
            _command(f, n)
        elif t == "for_statement":
            v = n.child_by_field_name("variable")
            if v is not None:
                _write(f, sp.node_text(src, v), n)
        elif t == "function_definition":
            nm = n.child_by_field_name("name")
            if nm is not None:
                fname = sp.node_text(src, nm)
                f.functions.add(fname)
                if fname in SHADOWS_STATE:      # `export() { …; }`: the script's own export no longer exports
                    f.barriers.append(sp.effective_pos(n))
                    f.cwd_events.append((sp.effective_pos(n), None))
        elif t == "expansion":
            ops = [c.type for c in n.children if not c.is_named]
            if ":=" in ops or "=" in ops:
                v = next((c for c in n.named_children if c.type == "variable_name"), None)
                if v is not None:
                    _write(f, sp.node_text(src, v), n)
        elif t in ("arithmetic_expansion", "c_style_for_statement", "subscript") or (
                t == "compound_statement" and n.children and n.children[0].type == "(("):
            names = _arith_names(src, n.child_by_field_name("index") if t == "subscript" else n)
            for name in names:
                _write(f, name, n, intlike=True)
            f.arith_refs.append((sp.effective_pos(n), names))
        elif t == "test_command":
            txt = sp.node_text(src, n)
            if re.search(r"\s-(eq|ne|lt|le|gt|ge)\s", txt):
                names = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", txt)) | \
                    {m for m in re.findall(r"(?<![$\w-])([A-Za-z_][A-Za-z0-9_]*)", txt)}
                f.arith_refs.append((sp.effective_pos(n), names))
        elif t in ("file_redirect", "heredoc_redirect", "herestring_redirect"):
            m = _FD_VAR.search(src[max(0, n.start_byte - 80):n.start_byte])   # `{fd}>file` assigns fd
            if m:
                _write(f, m.group(1).decode(), n)
        stack.extend(n.named_children)
    for pos, text in f.texts:
        if not _inert(f, text, _depth):
            _unseen(f, pos)
    _arith_barriers(f)
    if f.alias_enabled and f.alias_from is not None:     # an alias can rename export, cd, read …
        f.barriers.append(f.alias_from)
        f.cwd_events.append((f.alias_from, None))
    f.cwd_events.sort(key=lambda e: e[0])
    f.first_barrier = min(f.barriers, default=0)
    return f


def _write(f: Facts, name: str, node, simple: bool = False, value=None, intlike: bool = False) -> None:
    if name == "IFS":
        f.ifs_changed = True
    if name == "PATH":
        f.path_changed = True
    if name in ("POSIXLY_CORRECT",):
        f.alias_enabled = True
    f.writes.setdefault(name, []).append(Write(sp.effective_pos(node), node.end_byte, simple, value, intlike))


def _assignment(f: Facts, n) -> None:
    src = f.src
    name_node = n.child_by_field_name("name")
    if name_node is None:
        return
    if name_node.type == "subscript":
        inner = name_node.child_by_field_name("name")
        if inner is not None:
            _write(f, sp.node_text(src, inner), n)
        return
    name = sp.node_text(src, name_node)
    value = n.child_by_field_name("value")
    plus = any(c.type == "+=" for c in n.children)
    parent = n.parent
    stmt = parent if parent is not None and parent.type == "variable_assignments" else n
    if parent is not None and parent.type == "command" and _own_line(src, n, parent):
        parent, stmt = None, parent     # the grammar hangs `A=1 B=2 <newline> cmd` together: bash does not
    if parent is not None and parent.type == "command":
        # prefix: for that command only (IFS/PATH there change nothing after it), but not tracked
        f.writes.setdefault(name, []).append(Write(sp.effective_pos(n), n.end_byte))
        return
    if parent is not None and parent.type == "declaration_command":
        return                          # handled with its options
    simple = (sp.is_top_level(stmt) and not plus
              and (value is None or value.type != "array"))
    intlike = value is not None and bool(_INT.match(sp.node_text(src, value)))
    _write(f, name, n, simple, value, intlike)


def _own_line(src: bytes, n, cmd) -> bool:
    name = cmd.child_by_field_name("name")
    if name is None:
        return True
    return b"\n" in src[n.end_byte:name.start_byte].replace(b"\\\n", b"")


def _declaration(f: Facts, n) -> None:
    src = f.src
    kw = n.children[0].type if n.children else ""
    opts = ""
    top = sp.is_top_level(n) and kw != "local"
    for c in n.named_children:
        txt = sp.node_text(src, c)
        if c.type == "word" and txt[:1] in "-+":
            opts += txt[1:]
            continue
        if "n" in opts:
            f.barriers.append(sp.effective_pos(n))
        if "f" in opts or "F" in opts:
            continue
        if c.type == "variable_assignment":
            name_node = c.child_by_field_name("name")
            value = c.child_by_field_name("value")
            if name_node is None or name_node.type != "variable_name":
                f.barriers.append(sp.effective_pos(n))
                continue
            name = sp.node_text(src, name_node)
            plain = set(opts) <= set("xrgp") and not any(ch.type == "+=" for ch in c.children)
            if "i" in opts:
                f.barriers.append(sp.effective_pos(n))
            _write(f, name, c, top and plain and (value is None or value.type != "array"), value,
                   value is not None and bool(_INT.match(sp.node_text(src, value))))
        elif c.type == "variable_name":
            name = sp.node_text(src, c)
            if kw in ("local", "typeset", "declare") and (kw == "local" or set(opts) - set("xrgp")):
                _write(f, name, c)
        else:
            f.barriers.append(sp.effective_pos(n))      # a name computed at run time


def _unset(f: Facts, n) -> None:
    opts = ""
    for c in n.named_children:
        txt = sp.node_text(f.src, c)
        if txt.startswith("-"):
            opts += txt[1:]
            continue
        if "f" in opts:
            continue
        if c.type in ("variable_name", "word") and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", txt):
            _write(f, txt, n)
        else:
            f.barriers.append(sp.effective_pos(n))


_INTERESTING = BARRIER_COMMANDS | {"read", "mapfile", "readarray", "getopts", "printf", "wait", "let", "cd",
                                   "pushd", "popd", "alias", "shopt", "set", "hash"}


def _static_words(f: Facts, n) -> list:
    out = []
    name = n.child_by_field_name("name")
    if name is None:
        return out
    head = fields(f.src, name.named_children[0] if name.named_children else name, _NOLOOKUP)
    if isinstance(head, list) and head and os.path.basename(head[0]) not in _INTERESTING | _PREFIXES:
        return head[:1]
    for c in [name, *n.children_by_field_name("argument")]:
        if c is None:
            continue
        if c.type == "command_name":
            c = c.named_children[0] if c.named_children else c
        r = fields(f.src, c, _NOLOOKUP)
        out += r if isinstance(r, list) else [r]
    return out


_PREFIXES = {"command", "builtin", "time"}      # run the builtin that follows, in this shell
_DECLARE = {"export", "declare", "typeset", "local", "readonly"}


def strip_prefixes(words: list) -> list:
    """`command cd x`, `builtin export …`, `time read v` are still cd, export, read; `command -v`
    runs nothing ([])."""
    while words and isinstance(words[0], str) and words[0] in _PREFIXES:
        i = 1
        while i < len(words) and isinstance(words[i], str) and words[i].startswith("-") and words[i] != "--":
            if words[0] == "command" and set(words[i][1:]) & {"v", "V"}:
                return []
            i += 1
        if i < len(words) and words[i] == "--":
            i += 1
        words = words[i:]
    return words


def _command(f: Facts, n) -> None:
    words = strip_prefixes(_static_words(f, n))
    if not words:
        return
    pos = sp.effective_pos(n)
    head = words[0]
    if isinstance(head, Dyn):                   # could be read, eval, cd, declare …: judged lazily
        name = n.child_by_field_name("name")
        f.pending.append((pos, name.named_children[0] if name.named_children else name))
        f.cwd_events.append((pos, ("pending", len(f.pending) - 1)))
        return
    name = os.path.basename(head) if head not in (".",) else "."
    args = words[1:]
    if name in f.opaque:
        _unseen(f, pos)
    elif name in _DECLARE or name == "unset":      # only reached through command/builtin/time
        for a in args:
            if isinstance(a, Dyn):
                f.barriers.append(pos)
            elif not a.startswith(("-", "+")):
                nm = a.split("=", 1)[0].split("+", 1)[0]
                if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", nm):
                    _write(f, nm, n)
                else:
                    f.barriers.append(pos)
    elif name in BARRIER_COMMANDS:
        if name == "trap":
            if args and args[0] == "--":
                args = args[1:]
            if not args or (isinstance(args[0], str) and (args[0] in ("-l", "-p", "-", "") or
                                                          (args[0].startswith("-") and len(args) == 1))):
                return                      # lists, resets or ignores: runs nothing
            if isinstance(args[0], str):
                f.texts.append((pos, args[0]))
                return
        if name == "eval" and args and all(isinstance(a, str) for a in args):
            f.texts.append((pos, " ".join(args)))
            return
        _unseen(f, pos)
    elif name == "read":
        _named_args(f, n, args, "adinNptu", "ers", default="REPLY", arrays="a")
    elif name in ("mapfile", "readarray"):
        if any(isinstance(a, str) and a.startswith("-") and "C" in a for a in args):
            f.barriers.append(pos)
        _named_args(f, n, args, "dnOsuCc", "t", default="MAPFILE", last_only=True)
    elif name == "getopts":
        if len(args) >= 2:
            for a in (args[1], "OPTARG", "OPTIND"):
                if isinstance(a, str):
                    _write(f, a, n)
                else:
                    f.barriers.append(pos)
    elif name in ("printf", "wait"):
        flag = "-v" if name == "printf" else "-p"
        for i, a in enumerate(args[:-1]):
            if a == flag:
                if isinstance(args[i + 1], str) and re.match(r"^[A-Za-z_]\w*$", args[i + 1]):
                    _write(f, args[i + 1], n)
                else:
                    f.barriers.append(pos)
    elif name == "let":
        names = set()
        for a in args:
            if not isinstance(a, str):
                f.barriers.append(pos)
                continue
            names |= set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", a))
        for nm in names:
            _write(f, nm, n, intlike=True)
        f.arith_refs.append((pos, names))
    elif name in ("cd", "pushd", "popd"):
        if any(isinstance(a, str) and a.startswith("-") and "P" in a for a in args):
            f.physical = True
        f.cwd_events.append((pos, _cd_target(f, n, name, args)))
    elif name == "alias":
        defs = [a for a in args if not (isinstance(a, str) and a.startswith("-"))]
        if defs:
            f.alias_seen = True
            f.alias_from = pos if f.alias_from is None else min(f.alias_from, pos)
            for a in defs:
                if not isinstance(a, str) or "=" not in a:
                    if isinstance(a, str):
                        continue            # `alias name` prints it
                    f.alias_names = None
                    continue
                nm, _, val = a.partition("=")
                if f.alias_names is not None:
                    f.alias_names.add(nm)
                if val[-1:] in (" ", "\t"):
                    f.alias_names = None    # the next word is alias-expanded too
    elif name == "shopt":
        if args and args[0] == "-s" and any(a == "expand_aliases" or isinstance(a, Dyn) for a in args[1:]):
            f.alias_enabled = True
    elif name == "set":
        if any(isinstance(a, str) and ((a.startswith("-") and "P" in a) or a == "physical") for a in args):
            f.physical = True
        for i, a in enumerate(args):
            if not isinstance(a, str) or a == "--":
                f.errexit_off = f.errexit_off or not isinstance(a, str)
                break
            on = (a[:1] == "-" and a != "-o" and "e" in a) or (a == "-o" and args[i + 1:i + 2] == ["errexit"])
            off = (a[:1] == "+" and a != "+o" and "e" in a) or (a == "+o" and args[i + 1:i + 2] == ["errexit"])
            if on and sp.is_top_level(n):
                f.errexit_from = pos if f.errexit_from is None else min(f.errexit_from, pos)
            f.errexit_off = f.errexit_off or off
        for i, a in enumerate(args):
            if isinstance(a, Dyn) or (a == "-o" and i + 1 < len(args) and args[i + 1] in ("posix",)):
                f.alias_enabled = True
    elif name == "hash" and "-p" in args:
        f.path_changed = True


def _unseen(f: Facts, pos: int) -> None:
    f.barriers.append(pos)
    f.cwd_events.append((pos, None))
    f.code_barriers.append(pos)


def _inert(f: Facts, text: str, depth: int = 0) -> bool:
    """True when static eval/trap text can change nothing the facts model: no assignment,
    directory change, alias/option change, barrier, or call of a function or state builtin."""
    if depth > 3 or len(text) > 65536:
        return False
    src = text.encode("utf-8", "surrogateescape")
    root = sp.parse(src).root_node
    if sp.broken(root):
        return False
    sub = collect(src, root, lambda name: None, None, _depth=depth + 1)
    if (sub.writes or sub.barriers or sub.pending or sub.texts or sub.cwd_events or sub.alias_seen
            or sub.alias_enabled or sub.physical or sub.errexit_off or sub.functions):
        return False
    names, stack = [], [root]
    while stack:
        c = stack.pop()
        if c.type == "command_name":
            names.append(sp.node_text(src, c))
        stack.extend(c.named_children)
    blocked = f.functions | SHADOWS_STATE | BARRIER_COMMANDS | _INTERESTING | {"cd", "pushd", "popd"}
    return not any(os.path.basename(nm) in blocked or nm in blocked for nm in names)


def _cd_target(f: Facts, n, name: str, args: list) -> str | None:
    """The directory a certain, top-level `cd` moves to (relative to the current one), else None."""
    if name != "cd":
        return None
    stmt, plain = n, True
    parent = n.parent
    if parent is not None and parent.type == "list":
        plain = False
        # `cd DIR || exit …` at top level: afterwards the directory is DIR
        kids = parent.children
        if not (len(kids) == 3 and kids[0] == n and kids[1].type == "||" and kids[2].type == "command"
                and sp.node_text(f.src, kids[2]).split()[:1] in (["exit"], ["return"])):
            return None
        stmt = parent
    if not sp.is_top_level(stmt):
        return None
    rest = list(args)
    while rest and isinstance(rest[0], str) and rest[0] in ("-L", "-P", "-e", "-@", "--"):
        if rest.pop(0) == "--":
            break
    if not rest:
        target = "~"
    elif len(rest) != 1 or rest[0] == "-":
        return None
    elif isinstance(rest[0], Dyn):
        arg_nodes = n.children_by_field_name("argument")
        target = arg_nodes[-1] if arg_nodes else None   # evaluated in cwd_at, with the facts then certain
    else:
        target = rest[0]
    return _Plain(target) if plain and target is not None else target


class _Plain:
    """A bare top-level `cd DIR`: if it fails the script goes on in the old directory, so it
    is certain only under `set -e` or when DIR is the directory the job is already in."""
    def __init__(self, t):
        self.t = t


def _named_args(f: Facts, n, args: list, value_opts: str, flag_opts: str, default: str,
                arrays: str = "", last_only: bool = False) -> None:
    names, i = [], 0
    while i < len(args):
        a = args[i]
        if isinstance(a, Dyn):
            f.barriers.append(sp.effective_pos(n))
            return
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                if a[j] in value_opts:
                    if j + 1 == len(a):
                        i += 1
                        if a[j] in arrays and i < len(args):
                            names.append(args[i])
                    elif a[j] in arrays:
                        names.append(a[j + 1:])
                    break
                j += 1
            i += 1
            continue
        names.append(a)
        i += 1
    if last_only:
        names = names[-1:]
    for nm in names or [default]:
        if isinstance(nm, str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", nm):
            _write(f, nm, n)
        else:
            f.barriers.append(sp.effective_pos(n))


def _arith_names(src: bytes, n) -> set:
    out, stack = set(), [n] if n is not None else []
    while stack:
        c = stack.pop()
        if c.type in ("variable_name", "word"):
            t = sp.node_text(src, c)
            if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", t):
                out.add(t)
        stack.extend(c.children)
    return out


def _arith_barriers(f: Facts) -> None:
    """Arithmetic evaluates a variable's value as an expression (`v='IMG=3'; $((v))`
    assigns IMG): any reference to a variable that may hold a non-number is a barrier."""
    for pos, names in f.arith_refs:
        for name in names:
            ws = f.writes.get(name)
            if ws:
                risky = not all(w.intlike for w in ws)
            else:
                v = f.base(name)
                risky = v is None or (isinstance(v, str) and not _INT.match(v.strip() or "0"))
            if risky:
                f.barriers.append(pos)
                break
