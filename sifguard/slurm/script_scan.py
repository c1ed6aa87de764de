"""Find every container invocation in a batch script or srun command line (pure).

A small shell lexer (quotes, escapes, comments, line continuations, here-documents,
`;` `&&` `||` `|` `&` separators) feeds simple commands; wrappers are unwrapped
(`srun …`, `env VAR=… …`, `command`, `exec`, `time`, `nice`, `nohup`, `timeout`,
`stdbuf`, `mpirun`, `bash -c "…"`); variables assigned in the script and the job's
environment are expanded (`$X`, `${X}`, `${X:-default}`; not inside single quotes).
Whatever cannot be resolved statically — `eval`, `$(…)`, an unknown variable, a
runtime binary named through a variable — is reported as unresolved: the runtime
shim and SPANK hook see it when it runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from sifguard.slurm import runtime_argv

WRAPPERS_NOARG = {"command", "exec", "time", "nohup", "builtin", "unbuffer"}
SRUN_VALUE = {"-A", "-b", "-c", "-C", "-d", "-D", "-e", "-i", "-J", "-L", "-m", "-M", "-n", "-N", "-o", "-p",
              "-q", "-r", "-S", "-t", "-T", "-w", "-x", "-W", "-G", "--account", "--partition", "--ntasks",
              "--nodes", "--cpus-per-task", "--time", "--job-name", "--output", "--error", "--input",
              "--mem", "--mem-per-cpu", "--gres", "--gpus", "--constraint", "--nodelist", "--exclude",
              "--chdir", "--export", "--mpi", "--distribution", "--cpu-bind", "--qos", "--reservation",
              "--ntasks-per-node", "--het-group", "--label", "--container"}
MPI_VALUE = {"-n", "-np", "-N", "-H", "--host", "--hostfile", "-f", "-x", "--map-by", "--bind-to", "-ppn",
             "--mca", "-genv", "-env"}
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class Word:
    text: str = ""
    dynamic: bool = False      # holds $(…), `…`, or a variable we could not expand
    raw: str = ""


@dataclass
class Found:
    line: int
    text: str                  # the command as written
    image: str | None = None   # resolved image (absolute path or URI)
    tool: str = ""             # apptainer | singularity | sif (executed directly)
    command: str = ""
    resolved: bool = True
    note: str = ""


@dataclass
class Scan:
    found: list[Found] = field(default_factory=list)

    @property
    def images(self) -> list[Found]:
        return [f for f in self.found if f.resolved and f.image]

    @property
    def unresolved(self) -> list[Found]:
        return [f for f in self.found if not f.resolved]


def _expand(s: str, env: dict) -> tuple[str, bool]:
    dyn = False

    def rep(m):
        nonlocal dyn
        name = m.group(1) or m.group(3)
        if name in env:
            return env[name]
        if m.group(2) is not None:
            return m.group(2)
        dyn = True
        return m.group(0)
    return _VAR.sub(rep, s), dyn


def _logical_lines(script: str) -> list[tuple[int, str]]:
    """Join backslash-newline continuations and drop here-document bodies."""
    out, buf, start, heredoc = [], "", 0, None
    for n, line in enumerate(script.splitlines(), 1):
        if heredoc is not None:
            if line.strip() == heredoc:      # `<<-` allows leading tabs; be lenient with both
                heredoc = None
            continue
        if not buf:
            start = n
        if line.endswith("\\") and not line.endswith("\\\\"):
            buf += line[:-1]
            continue
        buf += line
        m = re.search(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1", buf)
        out.append((start, buf))
        buf = ""
        if m:
            heredoc = m.group(2)
    if buf:
        out.append((start, buf))
    return out


def _lex(line: str, env: dict) -> list[list[Word]]:
    """Split one logical line into simple commands of words."""
    cmds, words, w = [], [], None
    i, n = 0, len(line)

    def end_word():
        nonlocal w
        if w is not None:
            words.append(w)
            w = None

    def end_cmd():
        end_word()
        if words:
            cmds.append(list(words))
            words.clear()

    while i < n:
        c = line[i]
        if c in " \t":
            end_word()
            i += 1
            continue
        if c == "#" and w is None:
            break
        if c in ";&|()\n":
            end_cmd()
            i += 2 if line[i:i + 2] in ("&&", "||", ";;") else 1
            continue
        if c in "<>" and w is None:
            # redirection: skip the operator and its target word
            j = i + 1
            while j < n and line[j] in "<>&-": j += 1   # noqa: E701
            while j < n and line[j] in " \t": j += 1     # noqa: E701
            while j < n and line[j] not in " \t;&|": j += 1   # noqa: E701
            i = j
            continue
        if w is None:
            w = Word()
        if c == "\\" and i + 1 < n:
            w.text += line[i + 1]
            w.raw += line[i:i + 2]
            i += 2
        elif c == "'":
            j = line.find("'", i + 1)
            j = n if j < 0 else j
            w.text += line[i + 1:j]
            w.raw += line[i:j + 1]
            i = j + 1
        elif c == '"':
            j, seg = i + 1, ""
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n:
                    seg += line[j + 1]
                    j += 2
                    continue
                seg += line[j]
                j += 1
            if "$(" in seg or "`" in seg:
                w.dynamic = True
            t, dyn = _expand(seg, env)
            w.text += t
            w.dynamic |= dyn
            w.raw += line[i:j + 1]
            i = j + 1
        elif c == "$" and line[i:i + 2] == "$(":
            depth, j = 1, i + 2
            while j < n and depth:
                depth += {"(": 1, ")": -1}.get(line[j], 0)
                j += 1
            w.dynamic = True
            w.text += line[i:j]
            w.raw += line[i:j]
            i = j
        elif c == "`":
            j = line.find("`", i + 1)
            j = n if j < 0 else j
            w.dynamic = True
            w.text += line[i:j + 1]
            w.raw += line[i:j + 1]
            i = j + 1
        else:
            j = i
            while j < n and line[j] not in " \t;&|()<>'\"\\`#" and line[j:j + 2] != "$(":
                j += 1
            if j == i:
                j = i + 1
            seg = line[i:j]
            t, dyn = _expand(seg, env)
            w.text += t
            w.dynamic |= dyn
            w.raw += seg
            i = j
    end_cmd()
    return cmds


_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)


def _unwrap(words: list[Word], env: dict) -> tuple[list[Word], str]:
    """Strip leading assignments and wrappers; returns (command words, note)."""
    ws = list(words)
    changed = True
    while ws and changed:
        changed = False
        head = ws[0].text
        base = os.path.basename(head)
        if _ASSIGN.match(head) and not ws[0].dynamic:
            ws = ws[1:]
            changed = True
        elif base in WRAPPERS_NOARG:
            ws = ws[1:]
            while ws and ws[0].text.startswith("-"):
                ws = ws[1:]
            changed = True
        elif base == "env":
            ws = ws[1:]
            while ws and (ws[0].text.startswith("-") or _ASSIGN.match(ws[0].text)):
                ws = ws[1:]
            changed = True
        elif base in ("nice", "timeout", "stdbuf", "taskset", "numactl", "chrt", "ionice"):
            ws = ws[1:]
            while ws and ws[0].text.startswith("-"):
                opt = ws[0].text
                ws = ws[1:]
                if base in ("nice", "ionice", "chrt") and opt in ("-n", "-c", "-p") and ws:
                    ws = ws[1:]
            if base in ("timeout", "taskset", "chrt") and ws:
                ws = ws[1:]        # DURATION / MASK / PRIORITY
            changed = True
        elif base in ("srun", "mpirun", "mpiexec", "prun"):
            table = SRUN_VALUE if base == "srun" else MPI_VALUE
            ws = ws[1:]
            while ws and ws[0].text.startswith("-") and ws[0].text != "--":
                opt = ws[0].text.split("=", 1)[0]
                takes = "=" not in ws[0].text and (opt in table or (len(opt) == 2 and opt in table))
                ws = ws[1:]
                if takes and ws:
                    ws = ws[1:]
            if ws and ws[0].text == "--":
                ws = ws[1:]
            changed = True
    return ws, ""


def _resolve(path: str, env: dict, cwd: str) -> str:
    if "://" in path:
        return path
    if path.startswith("~/") or path == "~":
        path = env.get("HOME", "~") + path[1:]
    return os.path.normpath(os.path.join(cwd, path))


def scan(script: str, env: dict | None = None, cwd: str = "/", _depth: int = 0) -> Scan:
    env = dict(env or {})
    res = Scan()
    for lineno, line in _logical_lines(script):
        for words in _lex(line, env):
            # a command that is only assignments sets shell variables
            if all(_ASSIGN.match(w.text) for w in words):
                for w in words:
                    k, v = _ASSIGN.match(w.text).groups()
                    if w.dynamic:
                        env.pop(k, None)
                    else:
                        env[k] = v
                continue
            if words[0].text in ("export", "readonly", "declare", "local", "typeset"):
                for w in words[1:]:
                    m = _ASSIGN.match(w.text)
                    if m:
                        if w.dynamic:
                            env.pop(m.group(1), None)
                        else:
                            env[m.group(1)] = m.group(2)
                continue
            if words[0].text == "cd" and len(words) > 1 and not words[1].dynamic:
                cwd = _resolve(words[1].text, env, cwd)
                continue
            ws, _ = _unwrap(words, env)
            if not ws:
                continue
            text = " ".join(w.raw for w in words)
            head = ws[0]
            base = os.path.basename(head.text)
            if base == "eval" or (head.dynamic and (any(t in text for t in runtime_argv.TOOLS) or ".sif" in text)):
                if any(t in text for t in runtime_argv.TOOLS) or ".sif" in text:
                    res.found.append(Found(lineno, text, resolved=False,
                                           note="eval or a command named at run time: left to the runtime hooks"))
                continue
            if base in ("bash", "sh", "zsh", "dash") and len(ws) >= 3 and ws[1].text == "-c" and _depth < 3:
                inner = scan(ws[2].text, env, cwd, _depth + 1)
                for f in inner.found:
                    f.line = lineno
                res.found.extend(inner.found)
                continue
            tool = runtime_argv.tool_of(head.text)
            if tool:
                inv = runtime_argv.parse([w.text for w in ws])
                if not inv.runs_image:
                    continue
                if inv.image is None:
                    res.found.append(Found(lineno, text, tool=tool, command=inv.command, resolved=False,
                                           note=inv.error or "no image operand"))
                    continue
                iw = ws[inv.image_index]
                if iw.dynamic:
                    res.found.append(Found(lineno, text, tool=tool, command=inv.command, resolved=False,
                                           note=f"image {iw.raw} is computed at run time"))
                    continue
                res.found.append(Found(lineno, text, _resolve(iw.text, env, cwd), tool, inv.command))
            elif head.text.endswith(".sif") and not head.dynamic:
                res.found.append(Found(lineno, text, _resolve(head.text, env, cwd), "sif", "run"))
            elif head.text.endswith(".sif"):
                res.found.append(Found(lineno, text, resolved=False, tool="sif",
                                       note=f"image {head.raw} is computed at run time"))
    return res
