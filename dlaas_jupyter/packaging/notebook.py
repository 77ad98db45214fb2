"""A notebook, or one cell and what it needs, turned into a training script and its zip.

A job runs ``python main.py``, not a kernel, so IPython syntax is rewritten
first, with IPython's own transformer (``%x`` and ``!x`` become
``get_ipython()`` calls) and then as follows:

- ``!pip install ...`` and ``%pip install ...`` (also ``python -m pip``): the
  packages (and ``-r``/``-e``/``--index-url`` options) go into
  requirements.txt, which the Trainer installs before the command runs; the
  line is dropped. A requirements.txt you include is kept and these lines are
  added to it, except for projects it already names.
- other shell escapes (``!cmd``, ``!!cmd``, ``%sx``, ``%system``):
  ``subprocess.run(cmd, shell=True, check=True)``, so a failing command stops
  the job. ``x = !cmd`` gives the output's lines, as in IPython. Python
  variables in the command (``$name``, ``{expr}``) are not substituted.
- ``%%bash`` and ``%%sh`` cells: the body runs the same way.
- ``%cd DIR``: ``os.chdir(DIR)``; ``%env NAME=VALUE`` (or ``NAME VALUE``):
  ``os.environ[NAME] = VALUE``.
- ``%%writefile [-a] FILE``: the body is written to FILE.
- ``%time``, ``%timeit``, ``%%time``, ``%%timeit``, ``%%capture``, ``%%prun``:
  the code they wrap runs once, untimed.
- ``%dlaas_*`` lines: dropped.
- any other magic (``%matplotlib``, ``%load_ext``, ``%config``, ``obj?``,
  ``%run``, ``%conda``...): dropped, with a note naming it.
- a magic whose value is used (``t = %time f()``) and any other call of
  ``get_ipython()``: the cell is not valid Python after conversion (below).

The script imports ``os`` and ``subprocess`` first when the conversions use
them, and ``from __future__`` imports move to its top.

What is packaged:

- the whole notebook (``%dlaas_train``): every code cell in order, except
  cells tagged ``dlaas-skip``, the cell holding the ``%dlaas_train`` call, and
  ``%%dlaas_train`` cells (jobs of their own).
- one cell (``%%dlaas_train``): its body, preceded by what it needs from the
  cells above, in their order: the imports, functions, classes and
  assignments of every name it uses, transitively (names a function uses
  count where the function is called), statements that change those objects
  (``x.append(...)``, ``x[k] = ...``), and every ``%cd``, ``%env`` and
  ``%%writefile``. Shell commands above are left out, with a note; pip lines
  above all go into requirements.txt.

A cell that is not valid Python after conversion is left out with a note,
unless the script needs a name it mentions: then packaging fails naming it.
Cell numbers in notes count every cell from 1, markdown included.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import io
import os
import re
import shlex
import symtable
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from dlaas_jupyter.packaging.archive import SKIPPED_FOLDERS, write_file

__all__ = [
    "MAIN_SCRIPT",
    "REQUIREMENTS",
    "SKIP_TAG",
    "Packaged",
    "PackagingError",
    "package_notebook",
    "stale_cells",
    "to_zip",
]

SKIP_TAG = "dlaas-skip"
MAIN_SCRIPT = "main.py"
REQUIREMENTS = "requirements.txt"


class PackagingError(ValueError):
    """A notebook, cell or included path that cannot be packaged; the message names it."""


@dataclass(frozen=True)
class Packaged:
    """What a job is made of: the main script, every file of the zip, and what to tell the user."""

    script: str
    files: dict[str, bytes]
    notes: list[str]


def package_notebook(
    nb_path: Path,
    *,
    cell_source: str | None = None,
    include: Sequence[Path] = (),
    base_dir: Path | None = None,
    executed_sources: Sequence[str] | None = None,
    main_script: str = MAIN_SCRIPT,
) -> Packaged:
    """Package the saved notebook, or (``cell_source`` given) one ``%%dlaas_train`` cell body.

    ``include`` paths are relative to ``base_dir`` (default: the notebook's
    folder) and must lie under it. ``executed_sources`` (the kernel's ``In``)
    adds a note when the saved notebook differs from what was run.
    """
    nb_path = Path(nb_path)
    notebook = _read(nb_path)
    cells = _code_cells(notebook)
    notes: list[str] = []
    if executed_sources is not None:
        stale = _stale(cells, executed_sources)
        if stale:
            notes.append(
                f"the saved notebook differs from what you ran ({_cells_named(stale)}): "
                "save it (Ctrl+S) first"
            )
    skipped = [cell for cell in cells if SKIP_TAG in cell.tags]
    if skipped and cell_source is None:
        notes.append(f"{_cells_named(cell.number for cell in skipped)} tagged {SKIP_TAG}: left out")
    converted = [_convert(cell) for cell in cells if SKIP_TAG not in cell.tags]
    if cell_source is None:
        selection = _whole_notebook(converted, notes)
    else:
        selection = _one_cell(cells, converted, cell_source, notes)
    # A cell's job takes only what it needs: skipped cells matter only if they had some of it.
    script = _script(
        selection,
        nb_path.name,
        main_script,
        cell_mode=cell_source is not None,
        skipped=skipped if cell_source is not None else [],
        notes=notes,
    )
    files = _included(
        include, Path(base_dir) if base_dir is not None else nb_path.parent, main_script
    )
    requirements = _requirements(files.get(REQUIREMENTS), selection.requirements, notes)
    if requirements is not None:
        files[REQUIREMENTS] = requirements
        for line in requirements.decode("utf-8", "replace").splitlines():
            option, _, target = line.strip().partition(" ")
            if (
                option in ("-r", "--requirement", "-c", "--constraint")
                and target.strip() not in files
            ):
                notes.append(
                    f"{REQUIREMENTS} refers to {target.strip()}, which is not in the zip: include it"
                )
    files[main_script] = script.encode("utf-8")
    return Packaged(script=script, files=dict(sorted(files.items())), notes=notes)


def to_zip(packaged: Packaged) -> bytes:
    """The zip of ``packaged.files``: sorted names, one fixed timestamp, so the same files give
    the same bytes. Files starting with ``#!`` are executable (0755), the rest 0644."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(packaged.files):
            data = packaged.files[name]
            write_file(archive, name, data, executable=data.startswith(b"#!"))
    return buffer.getvalue()


def stale_cells(nb_path: Path, executed_sources: Sequence[str]) -> list[int]:
    """Cells whose saved code differs from what the kernel ran (``executed_sources`` = its ``In``).

    A cell is stale when the kernel ran something else as that cell's execution
    count and never ran its saved text, or when code run since the last save
    resembles it. Code run since the last save that resembles no saved cell (a
    new, unsaved cell) is reported as 0. Numbers count every cell from 1.
    """
    return _stale(_code_cells(_read(Path(nb_path))), executed_sources)


# --- reading the notebook ---------------------------------------------------------


@dataclass(frozen=True)
class _SavedCell:
    number: int  # 1-based position among all cells
    source: str
    tags: frozenset[str]
    execution_count: int | None


def _read(nb_path: Path) -> nbformat.NotebookNode:
    """The notebook as version 4. Not schema-validated: nbformat only logs what that finds,
    and it takes longer than the rest of packaging."""
    try:
        text = nb_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PackagingError(f"notebook not found: {nb_path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PackagingError(f"cannot read notebook {nb_path}: {exc}") from exc
    try:
        notebook = nbformat.convert(nbformat.reader.reads(text), 4)
    except (ValueError, KeyError, TypeError, AttributeError, nbformat.ValidationError) as exc:
        raise PackagingError(f"cannot read notebook {nb_path}: {exc}") from exc
    metadata = notebook.get("metadata", {})
    language = metadata.get("kernelspec", {}).get("language") or metadata.get(
        "language_info", {}
    ).get("name")
    if language and str(language).lower() != "python":
        raise PackagingError(
            f"{nb_path} is a {language} notebook; only Python notebooks can be packaged"
        )
    return notebook


def _code_cells(notebook: nbformat.NotebookNode) -> list[_SavedCell]:
    cells = []
    for number, cell in enumerate(notebook.cells, 1):
        if cell.get("cell_type") != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        count = cell.get("execution_count")
        cells.append(
            _SavedCell(
                number=number,
                source=cell.get("source", ""),
                tags=frozenset(tags if isinstance(tags, list) else ()),
                execution_count=count if isinstance(count, int) else None,
            )
        )
    return cells


def _cells_named(numbers: Iterable[int]) -> str:
    numbers = sorted(set(numbers))
    names = [str(n) if n else "a cell not saved yet" for n in numbers]
    return ("cell " if len(names) == 1 else "cells ") + ", ".join(names)


# --- IPython syntax to Python -----------------------------------------------------


@cache
def _transformer() -> TransformerManager:
    return TransformerManager()


def _as_python(source: str) -> str:
    """IPython's transformation of ``source``; code that already parses is left as is
    (the transformer changes nothing there and costs a millisecond a cell)."""
    try:
        ast.parse(source)
        return source
    except (SyntaxError, ValueError):
        return _transformer().transform_cell(source)


def _parsed(source: str) -> tuple[str, ast.Module]:
    """``source`` as Python (see _as_python) and its tree."""
    try:
        return source, ast.parse(source)
    except (SyntaxError, ValueError):
        code = _transformer().transform_cell(source)
    try:
        return code, ast.parse(code)
    except SyntaxError as exc:
        raise _Unconvertible(f"line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. a null byte
        raise _Unconvertible(str(exc)) from None


class _Unconvertible(Exception):
    """Code that is not valid Python after conversion; the message says why."""


@dataclass
class _Unit:
    """One top-level statement of the script (with the comments above it), or only comments."""

    text: str
    cell: int
    statement: bool = True
    root: bool = False  # kept in cell mode whatever the body uses (%cd, %env, %%writefile)
    shell: str = ""  # the shell command it is (cell mode leaves it out)
    helpers: frozenset[str] = frozenset()  # modules the converted code needs (os, subprocess)
    notes: list[str] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)


@dataclass
class _Cell:
    number: int
    source: str
    units: list[_Unit]
    error: str  # why the cell is not valid Python after conversion; "" when it is
    dlaas: frozenset[str]  # the %dlaas_*/%%dlaas_* magics it calls, with their % signs


@dataclass(frozen=True)
class _Replacement:
    """What a magic statement becomes."""

    code: str | None = None  # the Python replacing it; None: dropped
    body: bool = False  # code is the user's own code the magic wrapped: convert it as well
    root: bool = False
    shell: str = ""
    helpers: frozenset[str] = frozenset()
    note: str = ""
    requirements: tuple[str, ...] = ()


def _convert(cell: _SavedCell) -> _Cell:
    converter = _Converter(cell.number)
    try:
        units = converter.convert_cell(cell.source)
        error = ""
    except _Unconvertible as exc:
        units, error = [], str(exc)
    return _Cell(cell.number, cell.source, units, error, frozenset(converter.dlaas))


def _magic_call(node: ast.AST) -> tuple[str, list[str]] | None:
    """(method, arguments) of a ``get_ipython().method('...', ...)`` call the transformer wrote."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "get_ipython"
        and not node.func.value.args
        and not node.keywords
    ):
        args = [
            arg.value
            for arg in node.args
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
        ]
        if len(args) == len(node.args):
            return node.func.attr, args
    return None


def _shown(method: str, args: list[str]) -> str:
    """The magic's first line as the user wrote it."""
    if method == "system" and len(args) == 1:
        shown = f"!{args[0]}"
    elif method == "getoutput" and len(args) == 1:
        shown = f"!!{args[0]}"
    elif method == "run_line_magic" and len(args) == 2:
        shown = f"%{args[0]} {args[1]}"
    elif method == "run_cell_magic" and len(args) == 3:
        shown = f"%%{args[0]} {args[1]}"
    else:
        shown = f"get_ipython().{method}(...)"
    return shown.strip().split("\n")[0]


_PIP_COMMAND = re.compile(
    r"^\s*(?:(?:\S*/)?python[\d.]*\s+-m\s+|\{sys\.executable\}\s+-m\s+)?pip[\d.]*\s+install\b(.*)$",
    re.DOTALL,
)
_SHELL_OPERATORS = set("();<>|&")  # outside quotes, they make a pip line more than an install
_PIP_KEPT = {  # options that mean the same in requirements.txt
    "-r", "--requirement", "-c", "--constraint", "-e", "--editable",
    "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
}  # fmt: skip
_PIP_VALUED = {  # options of pip install that take a value and mean nothing in requirements.txt
    "-t", "--target", "--prefix", "--root", "--platform", "--python-version", "--implementation",
    "--abi", "--progress-bar", "--log", "--cache-dir", "--src", "--upgrade-strategy",
    "--no-binary", "--only-binary", "--trusted-host", "--timeout", "--retries", "--proxy",
}  # fmt: skip
_TIMEIT_OPTIONS = re.compile(r"^\s*(?:-[nr]\s*\d+\s+|-[qopt]\s+|-c\s+)*")
_DROP_REASONS = {
    "matplotlib": "a job has no display; save figures with plt.savefig",
    "load_ext": "IPython extensions do not load in a script",
    "reload_ext": "IPython extensions do not load in a script",
    "autoreload": "an IPython setting",
    "config": "an IPython setting",
    "pinfo": "help display",
    "pinfo2": "help display",
    "run": "include the file and import it instead",
    "conda": "conda packages are not installed: list them in requirements.txt",
    "mamba": "conda packages are not installed: list them in requirements.txt",
}


def _pip_requirements(args: str) -> list[str] | None:
    """The requirements.txt lines of ``pip install ARGS``, or None when ARGS is more than that."""
    lexer = shlex.shlex(args, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # unbalanced quotes
        return None
    if any((word and set(word) <= _SHELL_OPERATORS) or set(word) & set("`${") for word in words):
        return None  # a shell line, or one with variables only IPython or a shell expands
    lines: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        option, equals, value = word.partition("=")
        if option in _PIP_KEPT or option in _PIP_VALUED:
            if not equals:
                if index >= len(words):
                    return None
                value = words[index]
                index += 1
            if option in _PIP_KEPT:
                lines.append(f"{option} {value}")
        elif not word.startswith("-"):
            lines.append(word)
    return lines


def _substitution_note(command: str) -> str:
    if re.search(r"\{[^}]*\}|\$\w", command):
        return (
            f"`{command}` runs as written: IPython's substitution of Python variables "
            "($name, {expr}) does not happen in a script"
        )
    return ""


class _Converter:
    """Turns one cell's code into units of plain Python, noting the IPython syntax it meets."""

    def __init__(self, cell: int) -> None:
        self.cell = cell
        self.where = f"cell {cell}" if cell else "the %%dlaas_train cell"
        self.dlaas: set[str] = set()

    def convert_cell(self, source: str) -> list[_Unit]:
        """The units of a whole cell, checked to compile as they will run."""
        units = self.units(source)
        try:
            compile("\n".join(unit.text for unit in units), self.where, "exec", dont_inherit=True)
        except SyntaxError as exc:  # e.g. top-level await or return, which parsing lets through
            raise _Unconvertible(f"line {exc.lineno}: {exc.msg}") from None
        return units

    def units(self, source: str) -> list[_Unit]:
        code, tree = _parsed(source)
        magics = "get_ipython" in code
        lines = code.splitlines(keepends=True)
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line))

        def offset(line: int, column: int) -> int:  # ast columns count UTF-8 bytes
            return starts[line - 1] + len(
                lines[line - 1].encode("utf-8")[:column].decode("utf-8", "replace")
            )

        units: list[_Unit] = []
        previous_end = 0  # the line the previous statement ended on
        for index, statement in enumerate(tree.body):
            decorators = getattr(statement, "decorator_list", None)
            first_line = decorators[0].lineno if decorators else statement.lineno
            start = (
                starts[first_line - 1]
                if decorators
                else offset(statement.lineno, statement.col_offset)
            )
            end_line = statement.end_lineno or statement.lineno
            if index + 1 < len(tree.body) and tree.body[index + 1].lineno == end_line:
                end = offset(end_line, statement.end_col_offset or 0)
            else:  # to the end of the line, keeping a comment there
                end = starts[end_line - 1] + len(lines[end_line - 1].rstrip("\r\n"))
            prefix = (
                "".join(lines[previous_end : first_line - 1]) if first_line > previous_end else ""
            )
            if not units:
                prefix = prefix.lstrip("\r\n")
            previous_end = end_line
            magic = (
                _magic_call(statement.value) if magics and isinstance(statement, ast.Expr) else None
            )
            if not magics:
                units.append(_Unit(prefix + code[start:end], self.cell))
            elif magic is None:
                units.append(self._statement(code[start:end], start, statement, offset, prefix))
            else:
                units.extend(self._top_magic(*magic, prefix))
        trailing = "".join(lines[previous_end:]).strip("\r\n")
        if trailing.strip():
            units.append(_Unit(trailing, self.cell, statement=False))
        return units

    def _statement(
        self,
        text: str,
        start: int,
        statement: ast.stmt,
        offset: Callable[[int, int], int],
        prefix: str,
    ) -> _Unit:
        """A statement as written, with magics inside it (in a block, or as a value) rewritten."""
        unit = _Unit("", self.cell)
        helpers: set[str] = set()
        edits: list[tuple[int, int, str]] = []

        def edit(node: ast.expr | ast.stmt, replacement: str) -> None:
            first = offset(node.lineno, node.col_offset) - start
            last = offset(node.end_lineno or node.lineno, node.end_col_offset or 0) - start
            edits.append((first, last, replacement))

        handled: set[int] = set()
        for node in ast.walk(statement):
            if isinstance(node, ast.Expr) and (magic := _magic_call(node.value)) is not None:
                handled.add(id(node.value))
                replacement = self._replacement(*magic)
                code = (replacement.code or "").strip()
                if "\n" in code:
                    raise _Unconvertible(
                        f"{_shown(*magic)} inside a block wraps more than one line"
                    )
                edit(node, code or f"pass  # {_shown(*magic)}")
                helpers |= replacement.helpers
                unit.notes.extend([replacement.note] if replacement.note else [])
                unit.requirements.extend(replacement.requirements)
        calls = 0
        for node in ast.walk(statement):
            if not isinstance(node, ast.Call) or (magic := _magic_call(node)) is None:
                continue
            calls += 1
            if id(node) in handled:
                continue
            method, args = magic
            if not (
                method in ("system", "getoutput")
                or (method == "run_line_magic" and args[0] in ("sx", "system"))
            ):
                raise _Unconvertible(
                    f"it uses the value of {_shown(*magic)}, which a script cannot give"
                )
            edit(
                node,
                f"subprocess.run({args[-1]!r}, shell=True, check=True, capture_output=True, "
                "text=True).stdout.splitlines()",
            )
            helpers.add("subprocess")
            if note := _substitution_note(args[-1]):
                unit.notes.append(f"{self.where}: {note}")
        if (
            sum(isinstance(n, ast.Name) and n.id == "get_ipython" for n in ast.walk(statement))
            > calls
        ):
            raise _Unconvertible("it calls get_ipython(), which a script does not have")
        for first, last, replacement_text in sorted(edits, reverse=True):
            text = text[:first] + replacement_text + text[last:]
        unit.text = prefix + text
        unit.helpers = frozenset(helpers)
        return unit

    def _top_magic(self, method: str, args: list[str], prefix: str) -> list[_Unit]:
        replacement = self._replacement(method, args)
        notes = [replacement.note] if replacement.note else []
        if replacement.body and replacement.code is not None:
            units = self.units(replacement.code)
        elif replacement.code is not None:
            units = [
                _Unit(
                    replacement.code,
                    self.cell,
                    root=replacement.root,
                    shell=replacement.shell,
                    helpers=replacement.helpers,
                )
            ]
        elif replacement == _Replacement():  # a %dlaas_* magic: dropped without a trace
            units = []
        else:
            units = [_Unit(f"# {_shown(method, args)}", self.cell, statement=False)]
        if not units:
            return (
                [_Unit(prefix.rstrip("\r\n"), self.cell, statement=False)] if prefix.strip() else []
            )
        units[0].text = prefix + units[0].text
        units[0].notes[:0] = notes
        units[0].requirements[:0] = replacement.requirements
        return units

    def _replacement(self, method: str, args: list[str]) -> _Replacement:
        if method in ("system", "getoutput") and len(args) == 1:
            return self._shell(args[0], _shown(method, args))
        if method == "run_line_magic" and len(args) == 2:
            return self._line_magic(*args, shown=_shown(method, args))
        if method == "run_cell_magic" and len(args) == 3:
            return self._cell_magic(*args, shown=_shown(method, args))
        raise _Unconvertible(f"it calls {_shown(method, args)}, which a script does not have")

    def _shell(self, command: str, shown: str) -> _Replacement:
        pip = _PIP_COMMAND.match(command)
        requirements = _pip_requirements(pip.group(1)) if pip else None
        if requirements is not None:
            return self._pip(requirements, shown)
        note = _substitution_note(command)
        return _Replacement(
            code=f"subprocess.run({command!r}, shell=True, check=True)",
            shell=command,
            helpers=frozenset({"subprocess"}),
            note=f"{self.where}: {note}" if note else "",
        )

    def _pip(self, requirements: list[str], shown: str) -> _Replacement:
        listed = ", ".join(requirements) or "nothing"
        return _Replacement(
            note=f"{self.where}: {shown} -> {REQUIREMENTS} ({listed})",
            requirements=tuple(requirements),
        )

    def _dropped(self, shown: str, why: str) -> _Replacement:
        return _Replacement(note=f"{self.where}: {shown} dropped ({why})")

    def _line_magic(self, name: str, line: str, *, shown: str) -> _Replacement:
        if name.startswith("dlaas_"):
            self.dlaas.add(f"%{name}")
            return _Replacement()
        if name == "pip":
            verb, _, rest = line.strip().partition(" ")
            requirements = _pip_requirements(rest) if verb == "install" else None
            if requirements is None:
                return self._dropped(shown, "only pip install is understood")
            return self._pip(requirements, shown)
        if name in ("sx", "system"):
            return self._shell(line, shown)
        if name == "cd":
            return self._cd(line, shown)
        if name == "env":
            return self._env(line, shown)
        if name in ("time", "timeit"):
            code = line if name == "time" else _TIMEIT_OPTIONS.sub("", line, count=1)
            return _Replacement(
                code=code, body=True, note=f"{self.where}: {shown}: runs once, untimed"
            )
        return self._dropped(shown, _DROP_REASONS.get(name, "IPython magics do not run in a job"))

    def _cell_magic(self, name: str, line: str, body: str, *, shown: str) -> _Replacement:
        if name.startswith("dlaas_"):
            self.dlaas.add(f"%%{name}")
            return _Replacement()
        if name in ("time", "timeit", "capture", "prun"):
            return _Replacement(
                code=body, body=True, note=f"{self.where}: {shown}: the body runs once, as is"
            )
        if name in ("bash", "sh"):
            executable = ", executable='/bin/bash'" if name == "bash" else ""
            return _Replacement(
                code=f"subprocess.run({body!r}, shell=True, check=True{executable})",
                shell=body,
                helpers=frozenset({"subprocess"}),
            )
        if name == "writefile":
            try:
                words = shlex.split(line)
            except ValueError:
                words = []
            paths = [word for word in words if not word.startswith("-")]
            if len(paths) != 1:
                raise _Unconvertible(f"{shown}: expected one file name")
            mode = "a" if {"-a", "--append"} & set(words) else "w"
            return _Replacement(
                code=f"with open({paths[0]!r}, {mode!r}, encoding='utf-8') as _dlaas_file: "
                f"_dlaas_file.write({body!r})",
                root=True,
            )
        why = _DROP_REASONS.get(name, "IPython cell magics do not run in a job")
        return self._dropped(f"{shown} (with its body)", why)

    def _cd(self, line: str, shown: str) -> _Replacement:
        target = line.strip()
        if target.startswith("-"):
            return self._dropped(shown, "%cd options are not understood")
        if len(target) > 1 and target[0] == target[-1] and target[0] in "'\"":
            target = target[1:-1]
        return _Replacement(
            code=f"os.chdir(os.path.expanduser({(target or '~')!r}))",
            root=True,
            helpers=frozenset({"os"}),
        )

    def _env(self, line: str, shown: str) -> _Replacement:
        text = line.strip()
        match = re.match(r"^([^\s=]+)\s*=\s*(.*)$", text) or re.match(r"^(\S+)\s+(.+)$", text)
        if match is None:
            return self._dropped(shown, "it only shows the environment")
        return _Replacement(
            code=f"os.environ[{match.group(1)!r}] = {match.group(2)!r}",
            root=True,
            helpers=frozenset({"os"}),
        )


# --- choosing what goes into the script -------------------------------------------


@dataclass(frozen=True)
class _Selection:
    units: list[_Unit]
    requirements: list[str]
    bad: list[_Cell]  # cells left out because they are not valid Python after conversion


def _whole_notebook(cells: list[_Cell], notes: list[str]) -> _Selection:
    units: list[_Unit] = []
    for cell in cells:
        if "%dlaas_train" in cell.dlaas:
            if any(unit.statement for unit in cell.units):
                notes.append(
                    f"cell {cell.number} holds the %dlaas_train call: left out, with its other code"
                )
        elif not cell.error:
            units.extend(cell.units)
    notes.extend(note for unit in units for note in unit.notes)
    return _Selection(
        units=units,
        requirements=[line for unit in units for line in unit.requirements],
        bad=[cell for cell in cells if cell.error and "%dlaas_train" not in cell.dlaas],
    )


def _one_cell(
    saved: list[_SavedCell], cells: list[_Cell], body: str, notes: list[str]
) -> _Selection:
    position = _body_position(saved, body)
    if position is None:
        notes.append(
            "the %%dlaas_train cell is not in the saved notebook (save it first): "
            "all other cells were searched for what it needs"
        )
    above = [
        cell
        for cell in cells
        if (position is None or cell.number < position)
        and not any(name.startswith("%%dlaas_") for name in cell.dlaas)
    ]
    try:
        body_units = _Converter(position or 0).convert_cell(body)
    except _Unconvertible as exc:
        raise PackagingError(
            f"the %%dlaas_train cell is not valid Python after conversion: {exc}"
        ) from None
    for unit in body_units:
        unit.root = unit.statement
    candidates = [unit for cell in above if not cell.error for unit in cell.units]
    kept = _closure(candidates, body_units)
    installs = [unit for unit in candidates if unit.requirements and unit not in kept]
    for unit in installs + kept + body_units:
        notes.extend(unit.notes)
    for unit in candidates:
        if unit.shell:
            command = unit.shell.strip().splitlines()[0]
            notes.append(
                f"cell {unit.cell}: shell command `{command}` left out; run it in the "
                "%%dlaas_train cell if the job needs it"
            )
    used = {unit.cell for unit in kept if unit.statement}
    if used:
        notes.append(f"taken from the cells above: {_cells_named(used)}")
    return _Selection(
        units=kept + body_units,
        requirements=[line for unit in candidates + body_units for line in unit.requirements],
        bad=[cell for cell in above if cell.error],
    )


def _body_position(saved: list[_SavedCell], body: str) -> int | None:
    """The number of the saved %%dlaas_train cell whose body is ``body``."""
    wanted = _normal(body)
    for cell in saved:
        first, _, rest = cell.source.lstrip().partition("\n")
        if first.startswith("%%dlaas_train") and _normal(rest) == wanted:
            return cell.number
    return None


@dataclass(frozen=True)
class _Names:
    """How one statement relates to the module's names."""

    binds: frozenset[str]
    rebinds: frozenset[str]  # bound outright, whatever they were before
    reads: frozenset[str]  # read when the statement runs
    reads_later: frozenset[str]  # read by functions it defines, when they are called
    changes: frozenset[str]  # objects it changes in place: x.append(...), x[k] = ...
    star: bool  # from m import *: may bind anything


_COMPREHENSIONS = {"listcomp", "setcomp", "dictcomp", "genexpr"}
_WORDS = re.compile(r"\w+")
_STAR_IMPORT = re.compile(r"\bimport\s+\*")


def _names(unit: _Unit) -> _Names:
    table = symtable.symtable(unit.text, "<cell>", "exec")
    binds = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    reads = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    reads_later: set[str] = set()

    def scope(child: symtable.SymbolTable, later: bool) -> None:
        later = later or (
            child.get_type() == "function" and child.get_name() not in _COMPREHENSIONS
        )
        for symbol in child.get_symbols():
            if symbol.is_declared_global() and symbol.is_assigned():
                binds.add(symbol.get_name())
            if symbol.is_global() and symbol.is_referenced():
                (reads_later if later else reads).add(symbol.get_name())
        for grandchild in child.get_children():
            scope(grandchild, later)

    for child in table.get_children():
        scope(child, False)
    tree = ast.parse(unit.text)
    rebinds: set[str] = set()
    star = False
    for statement in tree.body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                if alias.name == "*":
                    star = True
                else:
                    rebinds.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            rebinds.add(statement.name)
        elif isinstance(statement, ast.Assign):
            rebinds.update(name for target in statement.targets for name in _bound(target))
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            rebinds.update(_bound(statement.target))
    changes: set[str] = set()
    for node in _module_level(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                reads.add(node.target.id)  # x += 1 reads x; symtable only says it binds it
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            targets = [node.value.func]
        for target in targets:
            if isinstance(target, (ast.Attribute, ast.Subscript)) and (root := _root_name(target)):
                changes.add(root)
    return _Names(
        binds=frozenset(binds),
        rebinds=frozenset(rebinds),
        reads=frozenset(reads),
        reads_later=frozenset(reads_later),
        changes=frozenset(changes),
        star=star,
    )


def _bound(target: ast.expr) -> set[str]:
    """Names an assignment to ``target`` rebinds outright."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Starred):
        return _bound(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return {name for element in target.elts for name in _bound(element)}
    return set()


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _module_level(tree: ast.Module) -> Iterable[ast.AST]:
    """Every node that runs when the module runs: not the bodies of functions and classes."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))


def _closure(candidates: list[_Unit], body: list[_Unit]) -> list[_Unit]:
    """The candidate statements ``body`` needs, transitively, in their order.

    Walking back from the end of the body, a statement is kept when it binds or
    changes a name still needed (or is a root); then the names it rebinds
    outright stop being needed and the names it reads start to be. Names read
    inside functions are needed when the function is called, so they count as
    needed at the end of the body, and the walk is repeated until no new such
    name turns up.
    """
    units = [unit for unit in candidates if unit.statement and not unit.shell] + body
    # Analysing a statement costs far more than listing its words; one that has
    # none of the needed names among its words cannot bind or change them.
    words = [frozenset(_WORDS.findall(unit.text)) for unit in units]
    analysed: dict[int, _Names] = {}
    late: set[str] = set()
    while True:
        needed = set(late)
        kept: set[int] = set()
        found_late: set[str] = set()
        for index in range(len(units) - 1, -1, -1):
            unit = units[index]
            if not (
                unit.root or needed & words[index] or (needed and _STAR_IMPORT.search(unit.text))
            ):
                continue
            names = analysed.get(index) or analysed.setdefault(index, _names(unit))
            wanted = (names.binds | names.changes) & needed or (names.star and needed)
            if not (unit.root or wanted):
                continue
            kept.add(index)
            needed -= names.rebinds
            needed |= names.reads
            found_late |= names.reads_later
        if found_late <= late:
            break
        late |= found_late
    above = len(units) - len(body)
    return [unit for index, unit in enumerate(units[:above]) if index in kept]


# --- writing the script -----------------------------------------------------------


_KNOWN = set(dir(builtins)) | {"__file__", "__builtins__", "__annotations__"}


def _script(
    selection: _Selection,
    notebook_name: str,
    main_script: str,
    *,
    cell_mode: bool,
    skipped: Sequence[_SavedCell],
    notes: list[str],
) -> str:
    """The script's text; a left-out cell that mentions a name the script lacks is an
    error, or (``skipped``, tagged so) a note."""
    text = _assemble(selection.units, notebook_name, main_script, cell_mode)
    try:
        compile(text, main_script, "exec", dont_inherit=True)
    except SyntaxError as exc:  # each cell compiled on its own: only joining them can fail here
        raise PackagingError(f"the generated {main_script} does not compile: {exc}") from None
    missing = _undefined(text)

    def missing_in(source: str) -> list[str]:
        return sorted(name for name in missing if re.search(rf"\b{re.escape(name)}\b", source))

    for cell in selection.bad:
        mentioned = missing_in(cell.source)
        if mentioned:
            raise PackagingError(
                f"cell {cell.number} is not valid Python after conversion ({cell.error}), and "
                f"{main_script} needs {', '.join(mentioned)}, which it mentions: fix the cell, "
                f"or tag it {SKIP_TAG} and define what is needed elsewhere"
            )
        notes.append(
            f"cell {cell.number} left out: not valid Python after conversion ({cell.error})"
        )
    for cell in skipped:
        mentioned = missing_in(cell.source)
        if mentioned:
            notes.append(
                f"cell {cell.number} is tagged {SKIP_TAG}, so what it has of "
                f"{', '.join(mentioned)} is not in {main_script}"
            )
    if missing:
        notes.append(
            f"{main_script} uses {', '.join(sorted(missing))}, which nothing in it defines: "
            "the job fails where it reaches them"
        )
    return text


def _assemble(units: list[_Unit], notebook_name: str, main_script: str, cell_mode: bool) -> str:
    origin = "a %%dlaas_train cell and what it needs" if cell_mode else "its code cells"
    futures = [unit for unit in units if unit.text.lstrip().startswith("from __future__")]
    helpers = sorted({name for unit in units for name in unit.helpers})
    parts = [f"# {main_script}: made by dlaas-jupyter from {notebook_name}, {origin}"]
    parts.extend(unit.text.strip() for unit in futures)  # Python wants them first
    parts.extend(f"import {name}" for name in helpers)
    current = -1
    for unit in units:
        if unit in futures:
            continue
        if unit.cell != current:
            current = unit.cell
            parts.append(
                f"\n\n# %% {f'cell {unit.cell}' if unit.cell else 'the %%dlaas_train cell'}"
            )
        parts.append(unit.text)
    return "\n".join(parts) + "\n"


def _undefined(text: str) -> set[str]:
    """Names the script reads that nothing in it binds (and that are not builtins)."""
    table = symtable.symtable(text, "<script>", "exec")
    bound = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    read = {s.get_name() for s in table.get_symbols() if s.is_referenced()}
    pending = list(table.get_children())
    while pending:
        child = pending.pop()
        for symbol in child.get_symbols():
            if symbol.is_declared_global() and symbol.is_assigned():
                bound.add(symbol.get_name())
            elif symbol.is_global() and symbol.is_referenced():
                read.add(symbol.get_name())
        pending.extend(child.get_children())
    if _STAR_IMPORT.search(text):
        return set()  # a star import may bind anything
    return read - bound - _KNOWN


# --- files beside the script ------------------------------------------------------


def _included(include: Sequence[Path], base_dir: Path, main_script: str) -> dict[str, bytes]:
    base = base_dir.resolve()
    files: dict[str, bytes] = {}
    for entry in include:
        given = Path(entry).expanduser()
        path = given if given.is_absolute() else base / given
        if not path.exists():
            raise PackagingError(
                f"cannot include {entry}: not found (paths are relative to {base})"
            )
        resolved = path.resolve()
        if not resolved.is_relative_to(base):
            raise PackagingError(
                f"cannot include {entry}: it is outside {base}, the folder jobs are packaged from"
            )
        for file in _files_under(resolved):
            name = file.relative_to(base).as_posix()
            if name == main_script:
                raise PackagingError(
                    f"cannot include {name}: the notebook's code becomes {main_script}"
                )
            try:
                files[name] = file.read_bytes()
            except OSError as exc:
                raise PackagingError(f"cannot include {name}: {exc.strerror or exc}") from exc
    return files


def _files_under(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    found: list[Path] = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(name for name in dirs if name not in SKIPPED_FOLDERS)
        found.extend(Path(root, name) for name in sorted(names))
    return found


def _project(line: str) -> str | None:
    """The normalised name of the project a requirements line installs, if it names one."""
    try:
        return canonicalize_name(Requirement(re.sub(r"\s+#.*$", "", line)).name)
    except InvalidRequirement:  # an option (-r, --index-url), a comment, a path
        return None


def _requirements(given: bytes | None, pip_lines: list[str], notes: list[str]) -> bytes | None:
    """requirements.txt: the included one, plus the pip lines for projects it does not name."""
    if not pip_lines:
        return given
    text = given.decode("utf-8", "replace") if given is not None else ""
    existing = [line.strip() for line in text.splitlines()]
    named = {name for line in existing if (name := _project(line))}
    added: list[str] = []
    for line in pip_lines:
        project = _project(line)
        if line in existing or line in added:
            continue
        if project and project in named:
            notes.append(f"{REQUIREMENTS} already names {project}: `pip install {line}` not added")
            continue
        added.append(line)
    merged = text.rstrip("\n") + "\n" if text.strip() else ""
    return (merged + "".join(f"{line}\n" for line in added)).encode("utf-8")


# --- stale cells ------------------------------------------------------------------


def _normal(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def _stale(cells: list[_SavedCell], executed_sources: Sequence[str]) -> list[int]:
    history = [_normal(_as_python(source)) if source else "" for source in executed_sources]
    ran = set(history)
    saved = {cell.number: _normal(_as_python(cell.source)) for cell in cells}
    saved_texts = set(saved.values())
    # In[n] belongs to the cell whose saved execution count is n, unless In[n] is
    # another saved cell's text: then that count is from an earlier kernel.
    stale = {
        cell.number
        for cell in cells
        if cell.execution_count is not None
        and 0 < cell.execution_count < len(history)
        and saved[cell.number] not in ran
        and history[cell.execution_count] not in saved_texts
    }
    last_saved = max((cell.execution_count or 0 for cell in cells), default=0)
    for entry in history[last_saved + 1 :]:  # run since the last save
        if (
            not entry
            or entry in saved_texts
            or re.search(r"run_(?:line|cell)_magic\('dlaas_", entry)
        ):
            continue
        scores = [
            (difflib.SequenceMatcher(None, entry, text).ratio(), n) for n, text in saved.items()
        ]
        score, number = max(scores, default=(0.0, 0))
        stale.add(number if score >= 0.5 else 0)
    return sorted(stale)
