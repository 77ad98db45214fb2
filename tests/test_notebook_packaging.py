"""Notebook -> training script: real .ipynb files, scripts run with python in a subprocess."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dlaas_jupyter.packaging.notebook import (
    Packaged,
    PackagingError,
    package_notebook,
    stale_cells,
    to_zip,
)

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write_notebook(path: Path, *cells: nbformat.NotebookNode | str) -> Path:
    """A notebook of ``cells`` (a str is a code cell) written with nbformat."""
    built = [new_code_cell(cell) if isinstance(cell, str) else cell for cell in cells]
    notebook = new_notebook(cells=built, metadata={"kernelspec": KERNELSPEC})
    nbformat.write(notebook, path)
    return path


def skip_cell(source: str) -> nbformat.NotebookNode:
    return new_code_cell(source, metadata={"tags": ["dlaas-skip"]})


def run_script(packaged: Packaged, folder: Path) -> subprocess.CompletedProcess[str]:
    """Unpack the zip into ``folder`` and run main.py there, as a learner would."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(to_zip(packaged))) as archive:
        archive.extractall(folder)
    env = {key: value for key, value in os.environ.items() if key != "DLAAS_TEST_VALUE"}
    return subprocess.run(
        [sys.executable, "main.py"],
        check=False,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


# --- the whole notebook -------------------------------------------------------------


def test_whole_notebook_runs_code_cells_in_order_without_skipped_and_train_cells(
    tmp_path: Path,
) -> None:
    nb = write_notebook(
        tmp_path / "train.ipynb",
        new_markdown_cell("# Training"),
        "steps = []\nsteps.append('load')",
        skip_cell("steps.append('exploration')\nraise SystemExit('a skipped cell ran')"),
        "steps.append('fit')\nprint(' '.join(steps))",
        "%dlaas_train --cpus 1\nsteps.append('submit cell')",
        "%dlaas_logs abc\n%dlaas_status",
    )
    packaged = package_notebook(nb)
    result = run_script(packaged, tmp_path / "job")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "load fit\n"
    assert "# %% cell 2" in packaged.script and "# %% cell 4" in packaged.script
    assert "dlaas" not in packaged.script.split("\n", 1)[1]  # only the header mentions it
    assert "cell 3 tagged dlaas-skip: left out" in packaged.notes
    assert "cell 5 holds the %dlaas_train call: left out, with its other code" in packaged.notes
    assert list(packaged.files) == ["main.py"]  # no pip lines, no requirements.txt


def test_every_kind_of_ipython_syntax_is_converted_and_runs(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.csv").write_text("x\n")
    nb = write_notebook(
        tmp_path / "magics.ipynb",
        "!pip install numpy 'pandas>=2' -q\n%pip install --upgrade scikit-learn==1.5\n"
        "!python -m pip install -r extra.txt",
        "%matplotlib inline\n%load_ext autoreload\n"
        "%config InlineBackend.figure_format = 'svg'\nlen?",
        "%cd data\n%env DLAAS_TEST_VALUE=forty two\n%env",
        "%%writefile notes.txt\nwritten by the job\n",
        "!echo shell says hi\nlisting = !ls\nprint('listing', listing)",
        '%%bash\necho "bash says $((40 + 2))"',
        "%%time\nimport os\nprint('env', os.environ['DLAAS_TEST_VALUE'])",
        "%time total = sum(range(5))\n%timeit -n 3 -r 1 total2 = total * 2\n"
        "print('totals', total, total2)",
        "for word in ['loop']:\n    !echo {word}\n    %matplotlib inline\nprint('after loop')",
        "%%html\n<b>not in a job</b>",
        "%dlaas_status",
    )
    packaged = package_notebook(nb, include=[Path("data")])
    assert packaged.files["requirements.txt"] == (
        b"numpy\npandas>=2\nscikit-learn==1.5\n-r extra.txt\n"
    )
    script = packaged.script
    assert "subprocess.run('echo shell says hi', shell=True, check=True)" in script
    assert "os.chdir(os.path.expanduser('data'))" in script
    assert "os.environ['DLAAS_TEST_VALUE'] = 'forty two'" in script
    assert [
        line for line in script.splitlines() if "pip" in line and not line.startswith("# ")
    ] == []
    assert "get_ipython" not in script
    notes = "\n".join(packaged.notes)
    for dropped in (
        "%matplotlib inline",
        "%load_ext autoreload",
        "%config",
        "%pinfo len",
        "%env dropped",
        "%%html",
    ):
        assert dropped in notes, dropped
    assert "-> requirements.txt (numpy, pandas>=2)" in notes
    assert "`echo {word}` runs as written" in notes
    assert "requirements.txt refers to extra.txt, which is not in the zip: include it" in notes

    result = run_script(packaged, tmp_path / "job")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "shell says hi" in lines
    assert "bash says 42" in lines
    assert "env forty two" in lines
    assert "totals 10 20" in lines
    assert "{word}" in lines  # not substituted, as the note says
    assert lines[-1] == "after loop"
    listing = next(line for line in lines if line.startswith("listing"))
    assert "notes.txt" in listing  # %cd data ran before %%writefile, and !ls ran there
    assert (tmp_path / "job" / "data" / "notes.txt").read_text() == "written by the job\n"


def test_failing_shell_command_stops_the_job(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "fail.ipynb", "!exit 3\nprint('not reached')")
    result = run_script(package_notebook(nb), tmp_path / "job")
    assert result.returncode != 0
    assert "not reached" not in result.stdout
    assert "CalledProcessError" in result.stderr


def test_included_requirements_are_merged_with_pip_lines(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("numpy==1.26.4\n# pinned\n")
    nb = write_notebook(tmp_path / "nb.ipynb", "!pip install numpy requests\n%pip install requests")
    packaged = package_notebook(nb, include=[Path("requirements.txt")])
    assert packaged.files["requirements.txt"] == b"numpy==1.26.4\n# pinned\nrequests\n"
    assert any("already names numpy" in note for note in packaged.notes)


def test_bad_cell_is_left_out_with_a_note_unless_needed(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "bad.ipynb",
        "ready = 'yes'",
        "def broken(:\n    pass",
        "await something()",
        "print('ready', ready)",
    )
    packaged = package_notebook(nb)
    assert (
        "cell 2 left out: not valid Python after conversion (line 1: invalid syntax)"
        in packaged.notes
    )
    assert any(note.startswith("cell 3 left out") and "await" in note for note in packaged.notes)
    result = run_script(packaged, tmp_path / "job")
    assert result.stdout == "ready yes\n", result.stderr

    needed = write_notebook(
        tmp_path / "needed.ipynb", "def helper(:\n    return 1", "print(helper())"
    )
    with pytest.raises(PackagingError, match=r"cell 1 is not valid Python .* needs helper"):
        package_notebook(needed)


def test_uses_of_get_ipython_and_magic_values_make_a_cell_unconvertible(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "ip.ipynb",
        "shell = get_ipython()",
        "elapsed = %time 1 + 1",
        "print('kept')",
    )
    packaged = package_notebook(nb)
    assert any("cell 1 left out" in note and "get_ipython()" in note for note in packaged.notes)
    assert any("cell 2 left out" in note and "%time" in note for note in packaged.notes)
    assert run_script(packaged, tmp_path / "job").stdout == "kept\n"


def test_future_imports_move_to_the_top(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "future.ipynb",
        "!echo first",
        "from __future__ import annotations\n"
        "def f(x: Undefined) -> int:\n    return 1\nprint(f(0))",
    )
    packaged = package_notebook(nb)
    result = run_script(packaged, tmp_path / "job")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first\n1\n"


def test_names_nothing_defines_are_noted(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", "display(results)")
    packaged = package_notebook(nb)
    assert any(
        "uses display, results, which nothing in it defines" in note for note in packaged.notes
    )


def test_other_languages_and_missing_files_are_refused(tmp_path: Path) -> None:
    r_notebook = new_notebook(
        cells=[new_code_cell("x <- 1")],
        metadata={"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}},
    )
    nbformat.write(r_notebook, tmp_path / "r.ipynb")
    with pytest.raises(PackagingError, match="R notebook; only Python"):
        package_notebook(tmp_path / "r.ipynb")
    with pytest.raises(PackagingError, match="notebook not found"):
        package_notebook(tmp_path / "missing.ipynb")
    (tmp_path / "junk.ipynb").write_text("{not json")
    with pytest.raises(PackagingError, match="cannot read notebook"):
        package_notebook(tmp_path / "junk.ipynb")


# --- one cell and what it needs -------------------------------------------------------

TRAIN_BODY = "print('answer', area(2))\n"


def test_cell_body_gets_its_dependencies_from_cells_above_and_runs(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "closure.ipynb",
        "import math\nimport json  # unused",
        "SCALE = 10\nunused_constant = [1, 2, 3]\nprint('exploring')",
        skip_cell("SCALE = 1000"),
        "def area(r):\n    return round(math.pi * r ** 2 * SCALE, 2)\n\n"
        "def unused_function():\n    return json",
        "plot_data = area(5)\nprint('more exploring', plot_data)",
        "%%dlaas_train --gpus 1\n" + TRAIN_BODY,
        "print('a cell below')\nSCALE = 99",
    )
    packaged = package_notebook(nb, cell_source=TRAIN_BODY)
    result = run_script(packaged, tmp_path / "job")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "answer 125.66\n"
    script = packaged.script
    for left_out in (
        "json",
        "unused_constant",
        "exploring",
        "unused_function",
        "plot_data",
        "1000",
        "99",
    ):
        assert left_out not in script, left_out
    assert script.index("import math") < script.index("SCALE = 10") < script.index("def area")
    assert script.rstrip().endswith(TRAIN_BODY.strip())
    assert "# %% cell 6" in script
    assert "taken from the cells above: cells 1, 2, 4" in packaged.notes


def test_closure_follows_rebinding_mutation_and_late_reads(tmp_path: Path) -> None:
    body = "print(describe(), items, limit)"
    nb = write_notebook(
        tmp_path / "state.ipynb",
        "limit = 1\nitems = ['stale']",
        "def describe():\n    return f'{PREFIX}-{helper()}'",
        "PREFIX = 'late'\nlimit = 3\nitems = []",
        "def helper():\n    return 'h'\nitems.append('a')\nconfig = {}",
        "items[0] = items[0].upper()\nlimit += 1\nprint('noise')",
        "%%dlaas_train\n" + body,
    )
    packaged = package_notebook(nb, cell_source=body)
    result = run_script(packaged, tmp_path / "job")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "late-h ['A'] 4\n"
    assert "stale" not in packaged.script  # rebound outright by cell 3 before any use
    assert "limit = 1" not in packaged.script
    assert "config" not in packaged.script
    assert "noise" not in packaged.script


def test_cell_mode_notes_a_skipped_cell_only_when_it_had_what_the_cell_needs(
    tmp_path: Path,
) -> None:
    body = "print(rate * 2)"
    nb = write_notebook(
        tmp_path / "skips.ipynb",
        skip_cell("rate = 0.5"),
        "steps = 3",
        skip_cell("job = _\njob.wait()"),
        "%%dlaas_train\n" + body,
    )
    notes = package_notebook(nb, cell_source=body).notes
    assert "cell 1 is tagged dlaas-skip, so what it has of rate is not in main.py" in notes
    assert not [note for note in notes if "cell 3" in note or "cells 1, 3" in note], notes
    assert any(note.startswith("main.py uses rate, which nothing in it defines") for note in notes)

    independent = "print(steps)"
    nb = write_notebook(
        tmp_path / "independent.ipynb",
        skip_cell("rate = 0.5"),
        "steps = 3",
        "%%dlaas_train\n" + independent,
    )
    assert package_notebook(nb, cell_source=independent).notes == [
        "taken from the cells above: cell 2"
    ]


def test_cell_mode_keeps_environment_magics_and_pip_lines_but_not_shell_commands(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.csv").write_text("x\n")
    body = "print(open('made.txt').read().strip(), os.getcwd().endswith('data'))"
    nb = write_notebook(
        tmp_path / "env.ipynb",
        "!pip install tqdm\nimport os",
        "%cd data\n!touch from-shell.txt",
        "%%writefile made.txt\nmade above\n",
        "%%dlaas_train\n" + body,
    )
    packaged = package_notebook(nb, cell_source=body, include=[Path("data")])
    assert packaged.files["requirements.txt"] == b"tqdm\n"
    assert any("`touch from-shell.txt` left out" in note for note in packaged.notes)
    result = run_script(packaged, tmp_path / "job")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "made above True\n"
    assert not (tmp_path / "job" / "data" / "from-shell.txt").exists()


def test_cell_body_not_saved_yet_searches_every_cell(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "nb.ipynb", "import math", "%%dlaas_train\nprint('old body')")
    body = "print(math.floor(2.5))"
    packaged = package_notebook(nb, cell_source=body)
    assert any("not in the saved notebook" in note for note in packaged.notes)
    assert "old body" not in packaged.script
    assert run_script(packaged, tmp_path / "job").stdout == "2\n"


def test_cell_mode_errors_name_the_cell(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        "def helper(:\n    return 1",
        "unrelated = (",
        "%%dlaas_train\nprint(helper())",
    )
    with pytest.raises(PackagingError, match=r"cell 1 is not valid Python .* needs helper"):
        package_notebook(nb, cell_source="print(helper())")
    with pytest.raises(PackagingError, match="the %%dlaas_train cell is not valid Python"):
        package_notebook(nb, cell_source="print(")
    fine = write_notebook(
        tmp_path / "fine.ipynb", "unrelated = (", "x = 2", "%%dlaas_train\nprint(x)"
    )
    packaged = package_notebook(fine, cell_source="print(x)")
    assert any(note.startswith("cell 1 left out") for note in packaged.notes)
    assert run_script(packaged, tmp_path / "job").stdout == "2\n"


# --- stale cells ------------------------------------------------------------------------


def test_stale_cells(tmp_path: Path) -> None:
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        new_markdown_cell("intro"),
        new_code_cell("a = 1", execution_count=1),
        new_code_cell("%env X=1\nb = 2", execution_count=2),
        new_code_cell("c = 3", execution_count=3),
    )
    # In[] holds IPython's transformation of what ran, with In[0] empty.
    in_sync = ["", "a = 1", "get_ipython().run_line_magic('env', 'X=1')\nb = 2\n", "c = 3"]
    assert stale_cells(nb, in_sync) == []
    # Cell 3 (b) was edited and run again after the save; then %dlaas_train ran.
    edited = [*in_sync, "get_ipython().run_line_magic('env', 'X=1')\nb = 20", "%dlaas_train"]
    assert stale_cells(nb, edited) == [3]
    # A new cell nobody saved.
    assert stale_cells(nb, [*in_sync, "import totally_new_module as t\nt.go()"]) == [0]
    # Cell 4 edited and saved but never run: what ran as In[3] differs.
    assert stale_cells(nb, ["", "a = 1", in_sync[2], "c = 0"]) == [4]
    # A kernel restarted since: counts in the file belong to an earlier session.
    assert stale_cells(nb, ["", "c = 3"]) == []
    packaged = package_notebook(nb, executed_sources=edited)
    assert (
        "the saved notebook differs from what you ran (cell 3): save it (Ctrl+S) first"
        in packaged.notes
    )


# --- included files and the zip ------------------------------------------------------


def test_include_files_and_folders(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "lib" / "__pycache__").mkdir(parents=True)
    (project / "lib" / ".ipynb_checkpoints").mkdir()
    (project / "lib" / "helpers.py").write_text("def greet():\n    return 'hello from lib'\n")
    (project / "lib" / "__pycache__" / "helpers.cpython-311.pyc").write_bytes(b"\0")
    (project / "lib" / ".ipynb_checkpoints" / "x-checkpoint.py").write_text("")
    (project / "config.yaml").write_text("lr: 0.1\n")
    (project / "run.sh").write_text("#!/bin/sh\necho run\n")
    nb = write_notebook(project / "nb.ipynb", "from lib.helpers import greet\nprint(greet())")
    packaged = package_notebook(nb, include=[Path("lib"), project / "config.yaml", Path("run.sh")])
    assert sorted(packaged.files) == ["config.yaml", "lib/helpers.py", "main.py", "run.sh"]
    with zipfile.ZipFile(io.BytesIO(to_zip(packaged))) as archive:
        modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in archive.infolist()}
    assert modes == {
        "config.yaml": 0o644,
        "lib/helpers.py": 0o644,
        "main.py": 0o644,
        "run.sh": 0o755,
    }
    result = run_script(packaged, tmp_path / "job")
    assert result.stdout == "hello from lib\n", result.stderr


def test_include_errors_name_the_path(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "secret.txt").write_text("outside")
    (project / "main.py").write_text("clash")
    nb = write_notebook(project / "nb.ipynb", "x = 1")
    with pytest.raises(PackagingError, match=r"cannot include \.\./secret\.txt: it is outside"):
        package_notebook(nb, include=[Path("../secret.txt")])
    with pytest.raises(PackagingError, match=r"cannot include nothing-here: not found"):
        package_notebook(nb, include=[Path("nothing-here")])
    with pytest.raises(
        PackagingError, match=r"cannot include main.py: the notebook's code becomes main.py"
    ):
        package_notebook(nb, include=[Path("main.py")])
    other_base = package_notebook(nb, include=[Path("secret.txt")], base_dir=tmp_path)
    assert other_base.files["secret.txt"] == b"outside"


def test_zip_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    nb = write_notebook(tmp_path / "nb.ipynb", "!pip install numpy", "print(1)")
    first = to_zip(package_notebook(nb, include=[Path("data.csv")]))
    os.utime(tmp_path / "data.csv", (1_000_000_000, 1_000_000_000))
    second = to_zip(package_notebook(nb, include=[Path("data.csv")]))
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.namelist() == ["data.csv", "main.py", "requirements.txt"]
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
