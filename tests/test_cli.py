"""`recorder ls / show / rm` against runs recorded by a real script in a temporary git repo."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

import recorder
from recorder import cli
from recorder.store import backends

SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path

    import helper
    import recorder


    @recorder.experiment(name="mnist")
    def main(lr=0.01, epochs=2, opt={"name": "sgd", "mom": 0.9}, code=1, note="x",
             fail=False):
        for step in range(epochs):
            recorder.log("loss", helper.loss(lr, step), step=step)
        recorder.log("odd", float("nan"), step=0)
        recorder.log("odd", float("inf"), step=1)
        recorder.log("odd", 2.0, step=2)
        model = Path(f"model-{lr}.txt")
        model.write_text(f"weights for lr={lr}")
        recorder.artifact(model)
        if fail:
            raise ValueError("boom [bold]not markup[/bold]")
        return {"acc": 1 - lr, "loss": float("nan")}


    @recorder.experiment(name="other")
    def other(lr=0.5):
        return None


    main(lr=0.001, epochs=3, note=None)                                   # run 1
    main(lr=0.01, opt={"name": "adam", "mom": 0.9}, code="1")              # run 2
    try:
        main(lr=0.1, code=2, fail=True)                                   # run 3, FAILED
    except ValueError:
        pass
    other()                                                               # run 4
''')


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A store holding four runs of a script in a dirty git repo with an untracked file."""
    root = tmp_path_factory.mktemp("cli")
    repo, store = root / "repo", root / "store"
    repo.mkdir()
    env = {**os.environ, "RECORDER_STORE": str(store), "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CEILING_DIRECTORIES": str(root),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    env.pop("GIT_DIR", None)
    (repo / "train.py").write_text(SCRIPT)
    (repo / "helper.py").write_text("def loss(lr, step):\n    return lr / (step + 1)\n")
    (repo / ".gitignore").write_text("model-*.txt\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=repo, env=env, check=True)
    with open(repo / "helper.py", "a") as f:
        f.write("# tuned\n")
    (repo / "notes.txt").write_text("try a smaller lr\n")
    proc = subprocess.run([sys.executable, "train.py"], cwd=repo, env=env,
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return store


@pytest.fixture
def store_copy(recorded, tmp_path):
    """A private copy of the recorded store, for tests that change it."""
    return shutil.copytree(recorded, tmp_path / "store")


def invoke(*args, env=None):
    result = CliRunner().invoke(cli.app, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def listed(result) -> list[int]:
    """The run ids in the first column of `recorder ls`."""
    assert result.exit_code == 0, result.output
    return [int(line.split()[0]) for line in result.stdout.splitlines()
            if line.split() and line.split()[0].isdigit()]


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recorder: error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


# -- ls ----------------------------------------------------------------------------------


def test_ls_shows_runs_newest_first_with_the_differing_config_keys(recorded):
    result = invoke("ls", "--store", recorded, "--experiment", "mnist")
    assert listed(result) == [3, 2, 1]
    header = result.stdout.splitlines()[0].split()
    assert header[:5] == ["id", "experiment", "status", "start", "(UTC)"]
    assert {"lr", "epochs", "opt.name", "code"} <= set(header)
    assert "opt.mom" not in header  # the same in every run
    rows = {int(line.split()[0]): line for line in result.stdout.splitlines()[1:]}
    assert "FAILED" in rows[3] and "COMPLETED" in rows[1]
    assert "adam" in rows[2] and "0.001" in rows[1] and "acc=0.999" in rows[1]


@pytest.mark.parametrize("args, expected", [
    ([], [4, 3, 2, 1]),
    (["--where", "config.lr<0.01"], [1]),
    (["--where", "config.lr<=0.01"], [2, 1]),
    (["--where", "config.lr>0.01"], [4, 3]),
    (["--where", "config.lr>=0.01"], [4, 3, 2]),
    (["--where", "config.lr=0.01"], [2]),
    (["--where", "config.lr!=0.01", "--experiment", "mnist"], [3, 1]),
    (["--where", "config.lr>0.001", "--where", "config.lr<0.1"], [2]),
    (["--where", "config.code=1"], [1]),
    (["--where", "config.code='1'"], [2]),
    (["--where", 'config.code="1"'], [2]),
    (["--where", "config.fail=true"], [3]),
    (["--where", "config.fail=False"], [2, 1]),
    (["--where", "config.note=null", "--experiment", "mnist"], [1]),
    (["--where", "config.note=None", "-e", "mnist"], [1]),
    (["--where", "config.opt.name=adam"], [2]),
    (["--where", "config.opt.name!=sgd", "--experiment", "mnist"], [2]),
    (["--status", "failed"], [3]),
    (["--status", "COMPLETED"], [4, 2, 1]),
    (["--experiment", "other"], [4]),
    (["--query", '{"config.epochs": {"$gte": 3}}'], [1]),
    (["--experiment", "mnist", "--status", "completed", "--where", "config.lr>0.001"], [2]),
    (["--limit", "2"], [4, 3]),
    (["--limit", "0"], [4, 3, 2, 1]),
])
def test_ls_filters_select_exactly_the_matching_runs(recorded, args, expected):
    assert listed(invoke("ls", "--store", recorded, *args)) == expected


def test_ls_says_when_the_limit_hides_runs(recorded):
    assert "--limit 0" in invoke("ls", "--store", recorded, "--limit", "3").stdout
    assert "--limit 0" not in invoke("ls", "--store", recorded, "--limit", "4").stdout


@pytest.mark.parametrize("args, fragment", [
    (["--where", "config.lr"], "--where 'config.lr' has no operator"),
    (["--where", "config.lr=<3"], "unknown operator"),
    (["--where", "<3"], "not a field name"),
    (["--query", "{bad"], "--query is not valid JSON"),
    (["--query", "[1]"], "must be a JSON object"),
    (["--status", "done"], "--status 'done' is not a run status"),
])
def test_ls_bad_filters_are_one_line_errors(recorded, args, fragment):
    assert_one_line_error(invoke("ls", "--store", recorded, *args), fragment, "RECORDER_DEBUG")


def test_ls_json_is_the_full_documents(recorded):
    result = invoke("ls", "--store", recorded, "--json", "--status", "completed")
    runs = json.loads(result.stdout)
    assert [r["_id"] for r in runs] == [4, 2, 1]
    assert runs[2]["result"] == {"acc": 0.999, "loss": "NaN"}
    assert runs[2]["start_time"].endswith("+00:00") and runs[2]["git"]["branch"] == "main"


def test_ls_empty_and_missing_stores(tmp_path):
    url = f"mongomock://{uuid.uuid4().hex}"
    result = invoke("ls", "--store", url)
    assert result.exit_code == 0 and result.stdout.strip() == f"no runs in {url}"
    assert json.loads(invoke("ls", "--store", url, "--json").stdout) == []
    missing = tmp_path / "typo"
    assert_one_line_error(invoke("ls", "--store", missing), f"no store at {missing}")
    assert not missing.exists()  # reading never creates a store


def test_unreachable_mongodb_names_the_store_without_its_password(monkeypatch):
    monkeypatch.setattr(backends, "SERVER_TIMEOUT_MS", 50)
    result = invoke("ls", "--store", "mongodb://ann:hunter22@127.0.0.1:1/db")
    assert_one_line_error(result, "cannot reach the store mongodb://ann:***@127.0.0.1:1/db")
    assert "hunter22" not in result.output


def test_recorder_debug_shows_the_traceback(recorded):
    result = invoke("show", "42", "--store", recorded, env={"RECORDER_DEBUG": "1"})
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "RunNotFound" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"recorder: error: no run 42 in {recorded}"


# -- show --------------------------------------------------------------------------------


def metric_row(text: str, name: str) -> list[str]:
    table = text[text.index("\nmetrics\n"):]
    return next(line.split() for line in table.splitlines() if line.split()[:1] == [name])


def test_show_prints_what_a_run_was(recorded):
    result = invoke("show", "1", "--store", recorded)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0].split() == ["run", "1", "mnist", "COMPLETED"]
    for line in ("lr = 0.001", "epochs = 3", "opt.name = sgd", "opt.mom = 0.9", "note = null",
                 "acc = 0.999", "loss = nan"):
        assert f"  {line}\n" in out
    assert "on main, dirty" in out and "1 changed lines" in out
    assert "1 stored, 0 skipped" in out  # notes.txt
    assert f"python      {sys.version.split()[0]}" in out
    assert "packages" in out and "platform" in out
    assert "  helper.py\n" in out and "  train.py\n" in out
    assert metric_row(out, "loss") == ["loss", "3", "0.000333333", "0.000333333", "0.001"]
    # NaN-aware: min/max over the finite values, the others counted
    assert metric_row(out, "odd") == ["odd", "3", "2", "2", "2", "1", "NaN,", "1", "Inf"]
    assert "events      0" in out
    assert "model-0.001.txt" in out
    assert "fail trace" not in out


def test_show_last_and_a_failed_run(recorded):
    assert invoke("show", "last", "--store", recorded).stdout.startswith("run 4  other")
    out = invoke("show", "3", "--store", recorded).stdout
    assert "fail trace" in out
    assert "ValueError: boom [bold]not markup[/bold]" in out  # user text is not rich markup


@pytest.mark.parametrize("ref, fragment", [("42", "no run 42"), ("abc", "'abc' is not a run id")])
def test_show_unknown_run_is_a_one_line_error(recorded, ref, fragment):
    assert_one_line_error(invoke("show", ref, "--store", recorded), fragment)


def test_show_json_is_the_run_document(recorded):
    doc = json.loads(invoke("show", "2", "--store", recorded, "--json").stdout)
    assert doc["_id"] == 2 and doc["config"]["opt"] == {"name": "adam", "mom": 0.9}
    assert doc["config"]["code"] == "1" and doc["result"]["loss"] == "NaN"


def test_odd_documents_do_not_crash_ls_or_show(store_copy):
    runs = recorder.connect(store_copy).runs
    runs.insert_one({"_id": 99})
    runs.insert_one({"_id": 98, "status": 5, "config": "x", "start_time": "yesterday",
                     "stop_time": 3, "git": "?", "environment": {"packages": 3, "torch": "2"},
                     "experiment": {"sources": "abc", "name": 7}, "result": float("nan"),
                     "host": [], "artifacts": {"a": 1}, "fail_trace": 7, "seed": None})
    assert listed(invoke("ls", "--store", store_copy))[:2] == [99, 98]
    json.loads(invoke("ls", "--store", store_copy, "--json").stdout)
    for run_id in (99, 98):
        result = invoke("show", run_id, "--store", store_copy)
        assert result.exit_code == 0 and result.stdout.startswith(f"run {run_id}  ?")
        assert "unreadable" not in result.stdout
        json.loads(invoke("show", run_id, "--store", store_copy, "--json").stdout)
    for run_id in (98, 1):  # a malformed run neither blocks its own removal nor another's
        assert invoke("rm", run_id, "--store", store_copy).exit_code == 0
    assert listed(invoke("ls", "--store", store_copy))[0] == 99


# -- rm ----------------------------------------------------------------------------------


def test_rm_removes_the_run_its_metrics_and_its_own_files(store_copy):
    db = recorder.connect(store_copy)
    run = db.runs.find_one({"_id": 1})
    artifact = run["artifacts"][0]["file_id"]
    sources = [sha for _, sha in run["experiment"]["sources"]]
    assert db.metrics.count_documents({"run_id": 1}) == 2

    result = invoke("rm", "1", "--store", store_copy)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("removed run 1: 2 metric chunks, 0 events, 0 histograms, "
                                    "0 embeddings, 1 files")
    assert db.runs.find_one({"_id": 1}) is None
    assert db.metrics.count_documents({"run_id": 1}) == 0
    assert db["fs.files"].find_one({"_id": artifact}) is None
    for sha in sources:  # train.py and helper.py are used by runs 2 and 3 too
        assert db["fs.files"].find_one({"_id": sha}) is not None
    assert_one_line_error(invoke("show", "1", "--store", store_copy), "no run 1")


def test_rm_checks_every_run_before_removing_any(store_copy):
    assert_one_line_error(invoke("rm", "2", "42", "--store", store_copy), "no run 42")
    assert recorder.connect(store_copy).runs.find_one({"_id": 2}) is not None
    result = invoke("rm", "last", "2", "2", "--store", store_copy)
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [
        "removed run 4", "removed run 2"]
    assert listed(invoke("ls", "--store", store_copy)) == [3, 1]


# -- the console script ------------------------------------------------------------------


def test_console_script(recorded):
    script = Path(sys.executable).with_name("recorder")
    version = subprocess.run([script, "--version"], check=False, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("recorder ")
    env = {**os.environ, "RECORDER_STORE": str(recorded)}
    listing = subprocess.run([script, "ls", "--json", "--where", "config.lr>=0.1"],
                             check=False, capture_output=True, text=True, env=env)
    assert listing.returncode == 0, listing.stderr
    assert [r["_id"] for r in json.loads(listing.stdout)] == [4, 3]
    missing = subprocess.run([script, "show", "42"], check=False, capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("recorder: error: no run 42")
    assert "Traceback" not in missing.stderr
