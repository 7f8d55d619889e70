"""Issue 20 without a Ray cluster: a shipped model runs no code, a folder is never taken, one run
per name, every config check before Ray, the test-read ledger of ``msa evaluate``, the study
file, ``msa submit``'s upload and timeouts, and the one-line errors of family 9. Each test fails
without its fix; the cases that need a cluster are in ``test_reliability3_ray.py``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
import yaml

from msa_model.checkpoint import save_model_package
from msa_model.config import ConfigError, ModelConfig, from_dict
from msa_model.model import MSAModel
from msa_model.tokenizer import build_tokenizer
from tests.cluster_utils import run_cli, wait_for
from tests.conftest import TINY_MODEL, tiny_experiment, write_yaml
from workflows.cli import main
from workflows.errors import ResultsFolderError
from workflows.experiment import dump_experiment, load_experiment, parse_experiment
from workflows.results.folders import LOCK, MARKER, lock_results_dir, release_lock
from workflows.results.read_ledger import recorded_reads
from workflows.results.trials import TrialRecord, trials_table
from workflows.runtime import watchdog

ROOT = Path(__file__).resolve().parents[1]


def _msa(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m workflows ARGS``, unbuffered, no terminal on stdin."""
    return run_cli(*args, cwd=cwd, timeout=timeout, env={"PYTHONUNBUFFERED": "1"})


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    """``msa ARGS`` in this process (the cases a subprocess adds nothing to)."""
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse
        status = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, out, err)


def _one_line_error(err: str, *parts: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("msa: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for part in parts:
        assert part in lines[0], lines[0]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported model (random weights) trained "on" a 60-image synthetic dataset."""
    from msa_model.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("rel3")
    write_synthetic_dataset(root / "data", num_images=60, size=32, seed=0)
    cfg = from_dict(ModelConfig, TINY_MODEL, "model")
    torch.manual_seed(0)
    model = MSAModel(cfg, build_tokenizer(cfg.text, ["a red roof", "two green fields"] * 10))
    meta = {
        "epoch": 1,
        "metrics": {"val_mr": 10.0},
        "experiment": parse_experiment(tiny_experiment(root / "data")).to_dict(),
        "text_encoder_config": model.text.encoder.config.to_dict(),
    }
    return save_model_package(root / "model", model, model.tokenizer, meta)


def _copy(package: Path, dest: Path) -> Path:
    shutil.copytree(package, dest)
    return dest


# --- 1. a shipped model runs no code -----------------------------------------------------------


def test_model_with_remote_code_tokenizer_runs_nothing(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _copy(package, tmp_path / "shipped")
    marker = tmp_path / "code_ran"
    tok = model / "tokenizer"
    (tok / "evil_tokenizer.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertTokenizerFast\n"
        "class EvilTokenizer(BertTokenizerFast):\n    pass\n"
    )
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "evil_tokenizer.EvilTokenizer"]}
    config["tokenizer_class"] = "EvilTokenizer"
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    data = Path(json.loads((model / "meta.json").read_text())["experiment"]["data"]["images"])
    image = next(data.iterdir())
    captions = tmp_path / "captions.txt"
    captions.write_text("a red roof\ntwo green fields\n")
    runs = [
        _msa("search", str(model), "--image", str(image), "--captions", str(captions),
             "--html", str(tmp_path / "p.html"), cwd=tmp_path),
        _cli(capsys, "evaluate", str(model)),
    ]  # fmt: skip
    for done in runs:
        text = done.stdout + done.stderr
        assert not marker.exists(), text[-2000:]
        assert "Do you wish to run the custom code" not in text
        assert done.returncode in (0, 1), text[-2000:]
        if done.returncode == 1:
            _one_line_error(done.stderr)


# --- 2. a folder msa did not create is never taken ---------------------------------------------


def _search_yaml(data: Path, tmp_path: Path, name: str = "own", **search: object) -> Path:
    raw = tiny_experiment(
        data, name=name, search={"num_samples": 1, "space": {}, **search}, final={"enabled": False}
    )
    return write_yaml(tmp_path / f"{name}.yaml", raw)


def test_foreign_or_linked_results_folder_refused_by_every_command(
    synth_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    mine = results / "own"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("precious")
    cfg = _search_yaml(synth_data, tmp_path)
    for verb in (["tune", str(cfg)], ["train", str(cfg), "--overwrite"], ["train", str(cfg)]):
        run = _msa if verb[0] == "tune" else lambda *a, cwd: _cli(capsys, *a)
        done = run(*verb, "--results", str(results), cwd=tmp_path)
        assert done.returncode == 1, done.stderr[-2000:]
        _one_line_error(done.stderr, "msa did not create it")
        assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]  # never marked
    shutil.rmtree(mine)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mine.symlink_to(elsewhere)
    done = _cli(capsys, "tune", str(cfg), "--results", str(results))
    assert done.returncode == 1
    _one_line_error(done.stderr, "is a symbolic link")
    assert list(elsewhere.iterdir()) == []


def _results_with_trials(out: Path, data: Path) -> Path:
    exp = parse_experiment(
        tiny_experiment(
            data, name="r", search={"space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}}
        )
    )
    out.mkdir(parents=True)
    (out / MARKER).write_text(json.dumps({"created_by": "msa tune"}))
    dump_experiment(exp, out / "experiment.yaml")
    history = pd.DataFrame({"epoch": [1, 2], "val_mr": [5.0, 7.0]})
    records = [TrialRecord("aaaa1111", {"optim.lr": 1e-3}, "TERMINATED", history=history)]
    trials_table(records, "val_mr", "max", 2).to_csv(out / "trials.csv", index=False)
    return out


def test_export_never_overwrites_a_file_it_did_not_write(
    synth_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _results_with_trials(tmp_path / "results" / "r", synth_data)
    notes = tmp_path / "notes.yaml"
    notes.write_text("my notes\n")
    done = _cli(capsys, "export", str(out), "--out", str(notes))
    assert done.returncode == 1
    _one_line_error(done.stderr, "msa export did not write it")
    assert notes.read_text() == "my notes\n"
    written = tmp_path / "best.yaml"
    for _ in range(2):  # an earlier export is replaced
        assert main(["export", str(out), "--out", str(written)]) == 0
    assert load_experiment(written).optim.lr == pytest.approx(1e-3)


# --- 3. one run per name -----------------------------------------------------------------------


def test_second_run_on_a_name_refused_naming_the_holder(synth_data: Path, tmp_path: Path) -> None:
    cfg = _search_yaml(synth_data, tmp_path)
    out = tmp_path / "results" / "own"
    lock_results_dir(out, "msa tune")  # this process runs a search on it
    try:
        done = _msa("tune", str(cfg), "--results", str(tmp_path / "results"), cwd=tmp_path)
        assert done.returncode == 1, done.stderr[-2000:]
        holder = f"pid {os.getpid()} on {socket.gethostname()}"
        _one_line_error(done.stderr, "in use by msa tune", holder)
    finally:
        release_lock(out)
    assert not (out / LOCK).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, capsys) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    lock_results_dir(out, "msa train")
    assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    assert f"taking over the lock of pid {dead}" in capsys.readouterr().out
    release_lock(out)
    (out / LOCK).write_text(json.dumps({"pid": 1, "host": "another-host", "command": "msa tune"}))
    with pytest.raises(ResultsFolderError, match="pid 1 on another-host"):
        lock_results_dir(out, "msa train")  # another host's lock cannot be judged: kept


# --- 4. every config check before Ray ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "space"),
    [
        ("loss.lambda_mscma", 15.0, {"loguniform": [1.0, 10.0]}),
        ("model.image.num_scales", 2, {"choice": [1, 3, 4]}),
        ("model.image.num_scales", 2, {"randint": [3, 5]}),
        ("loss.margin", 0.25, {"quniform": [0.1, 0.5, 0.1]}),
    ],
)
def test_baseline_outside_the_space_is_a_config_error(
    synth_data: Path, tmp_path: Path, key: str, value: object, space: dict, capsys
) -> None:
    cfg = _search_yaml(synth_data, tmp_path, space={key: space})
    run = _msa if "loguniform" in space else lambda *a, cwd: _cli(capsys, *a)
    done = run("tune", str(cfg), "--set", f"{key}={value}", "--results",
               str(tmp_path / "results"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    _one_line_error(done.stderr, f"search.space.{key}: the baseline value", str(cfg))
    assert not (tmp_path / "results").exists()  # before the folder, before Ray


def test_num_cpus_zero_refused_before_ray(synth_data: Path, tmp_path: Path, capsys) -> None:
    cfg = _search_yaml(synth_data, tmp_path)
    done = _cli(capsys, "tune", str(cfg), "--num-cpus", "0")
    assert done.returncode == 2 and "--num-cpus: must be >= 1, got 0" in done.stderr


# --- 5. a killed driver leaves no process of its cluster (with Ray: test_reliability3_ray) -----

FAKE_DRIVER = """
import subprocess, time
from workflows.runtime import watchdog
other = subprocess.Popen(["sleep", "300"])  # started before: not the cluster's
before = watchdog.children()
node = subprocess.Popen(["sh", "-c", "sleep 300 & wait"])  # a 'raylet' and its 'agent'
watchdog.guard(before)
print(other.pid, node.pid, flush=True)
time.sleep(300)
"""


def _ended(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_watchdog_ends_the_cluster_of_a_killed_driver_and_nothing_else() -> None:
    driver = subprocess.Popen([sys.executable, "-c", FAKE_DRIVER], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
    assert driver.stdout is not None
    other_pid, node_pid = map(int, driver.stdout.readline().split())
    other, node = psutil.Process(other_pid), psutil.Process(node_pid)
    started = [other, node]
    try:
        (agent,) = wait_for(node.children, 10, "the node's child")
        started.append(agent)
        ours = {other_pid, node_pid}
        (guard,) = [p for p in psutil.Process(driver.pid).children() if p.pid not in ours]
        time.sleep(1.5 * watchdog.INTERVAL_S)  # it follows a child born after it started
        driver.kill()
        driver.wait()
        wait_for(lambda: all(map(_ended, (node, agent, guard))), 15, "the cluster to end")
        assert not _ended(other)  # not the cluster's, never touched
    finally:
        driver.kill()
        for p in started:
            if not _ended(p):
                p.kill()


def test_sigterm_while_ray_init_holds_it_is_an_interrupt() -> None:
    """``ray.init`` sets SIGTERM to ``sys.exit(15)`` while it starts a cluster (seconds): a
    SIGTERM then exits 143 with the hint too, not 15 (found by benchmarks.faults)."""
    import signal

    from workflows.signals import sigterm_as_interrupt, terminated

    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert terminated()
    with pytest.raises(SystemExit), sigterm_as_interrupt():
        sys.exit(15)  # a command's own exit status, SIGTERM ours: left alone


def test_tune_handler_is_taken_back_after_each_run() -> None:
    """Tune's SIGINT handler (installed by its run loop, ``_setup_signal_catching``) stays in
    place when a run ends normally: a Ctrl-C during export or the final stage then only printed
    Tune's warning and the command went on to exit 0 (found by benchmarks.faults). Around each
    ``Tuner.fit`` the old handler comes back, and a signal Tune's handler took is reported."""
    import signal

    from ray.tune.tune import _setup_signal_catching  # what Tuner.fit runs on the main thread

    from workflows.signals import tune_interrupts

    before = signal.getsignal(signal.SIGINT)
    with tune_interrupts() as interrupted:
        _setup_signal_catching()  # a run that ends without a signal
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before and not interrupted()
    with pytest.raises(KeyboardInterrupt):  # so a Ctrl-C now is one
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    with tune_interrupts() as interrupted:
        stop = _setup_signal_catching()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the run: Tune stops and saves
        assert stop.wait(5)
    assert interrupted() and signal.getsignal(signal.SIGINT) is before


# --- 6. the test-read ledger of msa evaluate ---------------------------------------------------


def test_evaluate_test_split_goes_through_the_ledger(
    package: Path, synth_data: Path, tmp_path: Path, capsys
) -> None:
    out = _results_with_trials(tmp_path / "results" / "r", synth_data)
    model = _copy(package, out / "model")
    assert main(["evaluate", str(model), "--split", "test"]) == 0
    reads = recorded_reads(out / "final")
    assert list(reads) == ["checkpoint:model"] and reads["checkpoint:model"][0]["finished"]
    capsys.readouterr()
    assert main(["evaluate", str(model), "--split", "test"]) == 1
    assert "already read for checkpoint:model" in capsys.readouterr().err
    assert main(["evaluate", str(model), "--split", "test", "--reread-test"]) == 0
    assert [bool(r["finished"]) for r in recorded_reads(out / "final")["checkpoint:model"]] == [
        True, True,
    ]  # fmt: skip
    assert main(["evaluate", str(model)]) == 0  # val: no record
    assert len(recorded_reads(out / "final")["checkpoint:model"]) == 2


def test_evaluate_a_final_run_already_tested_is_refused(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results" / "r"
    run = _copy(package, out / "ray" / "final_runs" / "r-final-0123" / "checkpoint_000001")
    (out / MARKER).write_text(json.dumps({"created_by": "msa tune"}))
    final = out / "final"
    final.mkdir()
    (final / "test_reads.json").write_text(json.dumps(
        {"final:r-final-0123": [{"started": "t0", "finished": "t1"}]}
    ))  # fmt: skip
    done = _cli(capsys, "evaluate", str(run), "--split", "test")
    assert done.returncode == 1
    _one_line_error(done.stderr, "already read for final:r-final-0123", "--reread-test")
    exported = _copy(package, out / "model")  # msa export --model of that run: the same weights
    meta = json.loads((exported / "meta.json").read_text())
    meta["source"] = {"results": str(out), "checkpoint": str(run.relative_to(out))}
    (exported / "meta.json").write_text(json.dumps(meta))
    done = _cli(capsys, "evaluate", str(exported), "--split", "test")
    assert done.returncode == 1
    _one_line_error(done.stderr, "already read for final:r-final-0123")


# --- 7. the study file checked before use ------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty (0 bytes)"), (b"garbage " * 100, "not an SQLite database")],
)
def test_broken_study_file_is_one_line_before_ray(
    synth_data: Path, tmp_path: Path, content: bytes, message: str, capsys
) -> None:
    study = tmp_path / "study.db"
    study.write_bytes(content)
    cfg = _search_yaml(
        synth_data, tmp_path, storage=f"sqlite:///{study}",
        space={"optim.lr": {"loguniform": [1e-4, 1e-2]}},
    )  # fmt: skip
    run = _msa if content else lambda *a, cwd: _cli(capsys, *a)
    done = run("tune", str(cfg), "--results", str(tmp_path / "results"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    _one_line_error(done.stderr, str(study), message)
    assert study.read_bytes() == content
    assert "Ray dashboard" not in done.stdout


def test_study_of_another_program_refused(tmp_path: Path) -> None:
    import sqlite3

    from workflows.results.study_file import check_study

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (x)")
    with pytest.raises(ConfigError, match="without Optuna's tables"):
        check_study(f"sqlite:///{db}", "s")
    with pytest.raises(ConfigError, match="the search's Optuna study is missing"):
        check_study(f"sqlite:///{tmp_path / 'gone.db'}", "s", must_exist=True)


# --- 8. msa submit -----------------------------------------------------------------------------


def _project(root: Path) -> Path:
    (root / "exp").mkdir(parents=True)
    write_yaml(root / "exp" / "a.yaml", {"name": "a", "search": {"space": {}}})
    (root / "train.py").write_text("print(1)\n")
    return root


def test_upload_excludes_credentials_at_any_depth(tmp_path: Path) -> None:
    from ray._private.thirdparty.pathspec import PathSpec

    from workflows.runtime.jobs import DEFAULT_EXCLUDES, upload_listing

    wd = _project(tmp_path / "proj")
    secrets = [
        "vendor/lib/.git/config", "deploy/credentials", "db/.pgpass", "ops/kubeconfig",
        "conf/secrets.yaml", "home/.bash_history", "x/y/.zsh_history", "a/.aws/credentials",
        "infra/terraform.tfstate",
    ]  # fmt: skip
    for rel in secrets:
        (wd / rel).parent.mkdir(parents=True, exist_ok=True)
        (wd / rel).write_text("secret")
    assert upload_listing(wd, DEFAULT_EXCLUDES)["files"] == 2  # a.yaml and train.py
    spec = PathSpec.from_lines("gitwildmatch", DEFAULT_EXCLUDES)  # what Ray's packer is given
    for rel in secrets:
        assert spec.match_file(rel), rel
    for kept in ("exp/a.yaml", "train.py", "docs/credentials_howto.md", "secrets_demo.py"):
        assert not spec.match_file(kept), kept


def test_upload_refuses_a_link_loop_and_names_large_files(tmp_path: Path, capsys) -> None:
    from workflows.runtime.jobs import DEFAULT_EXCLUDES, prepare_submission, upload_listing

    wd = _project(tmp_path / "proj")
    (wd / "exp" / "again").symlink_to(wd)
    with pytest.raises(ConfigError, match="again: a symbolic link to .* a folder that contains"):
        upload_listing(wd, DEFAULT_EXCLUDES)
    (wd / "exp" / "again").unlink()
    (wd / "shared").symlink_to(wd / "exp")  # a link to a sibling is packed twice: counted twice
    with open(wd / "weights.bin", "wb") as f:
        f.truncate(150 * 2**20)  # sparse: no disk used
    listing = upload_listing(wd, DEFAULT_EXCLUDES)
    assert listing["files"] == 4 and listing["large"] == [("weights.bin", 150 * 2**20)]
    notes = prepare_submission(wd / "exp" / "a.yaml", wd)["notes"]
    assert any("large file uploaded: weights.bin (150 MiB)" in n for n in notes)


def test_submit_to_a_server_that_never_answers_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from workflows.runtime import jobs

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    monkeypatch.setattr(jobs, "HTTP_TIMEOUT_S", 1.0)
    wd = _project(tmp_path / "proj")
    address = f"http://127.0.0.1:{server.getsockname()[1]}"
    args = ["submit", str(wd / "exp" / "a.yaml"), "--working-dir", str(wd), "--address", address]
    began = time.perf_counter()
    try:
        assert main(args) == 1
    finally:
        server.close()
        for conn in accepted:
            conn.close()
    assert time.perf_counter() - began < 30  # Ray's client alone waits forever
    err = capsys.readouterr().err
    assert err.startswith("msa: error: ") and "Traceback" not in err, err  # (and msa's hint)
    # the timeout; or Ray's "Failed to connect" when requests calls it a connection error
    assert f"the Ray job server at {address} did not answer within 1 s" in err or (
        f"cannot reach the Ray job server at {address}" in err
    ), err


def test_group_writable_tune_state_not_trusted(tmp_path: Path) -> None:
    import grp

    from workflows.runtime.trusted import check_trusted

    state = tmp_path / "ray"
    check_trusted(str(state))  # a search stopped before Tune saved anything: nothing to load
    (state / "tune").mkdir(parents=True)
    pickled = state / "tune" / "searcher-state.pkl"
    pickled.write_bytes(b"x")
    pickled.chmod(0o664)
    shared = next(
        (g.gr_gid for g in grp.getgrall() if g.gr_gid != os.getgid() and g.gr_name != "root"),
        None,
    )
    if shared is None or os.geteuid() != 0:
        pytest.skip("needs a group to give the file to (root can chown)")
    os.chown(pickled, os.getuid(), shared)
    with pytest.raises(ResultsFolderError, match="searcher-state.pkl .* not yours alone"):
        check_trusted(str(state))
    pickled.chmod(0o644)
    check_trusted(str(state))


# --- 9. one-line errors ------------------------------------------------------------------------


def test_model_meta_without_experiment_or_with_another_embed_dim(
    package: Path, tmp_path: Path, capsys
) -> None:
    for name, change in (
        ("no_experiment", lambda meta: meta.pop("experiment")),
        ("wrong_dim", lambda meta: meta["experiment"]["model"].update(embed_dim=48)),
    ):
        model = _copy(package, tmp_path / name)
        meta = json.loads((model / "meta.json").read_text())
        change(meta)
        (model / "meta.json").write_text(json.dumps(meta))
        for args in (["evaluate", str(model)], ["search", str(model), "--images",
                     str(tmp_path), "--query", "a red roof"]):  # fmt: skip
            assert main(args) == 1, name
            err = capsys.readouterr().err
            assert err.startswith("msa: error:") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("content", [b"", b'\x00\x01garbage\xff\n"open'])
def test_empty_or_garbage_trials_csv(synth_data: Path, tmp_path: Path, content: bytes, capsys):
    out = _results_with_trials(tmp_path / "r", synth_data)
    (out / "trials.csv").write_bytes(content)
    for args in (
        ["export", str(out)],
        ["evaluate", str(out)],
        ["evaluate", str(out), "--trial", "a"],
    ):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "trials.csv: not a table msa wrote" in err and len(err.splitlines()) == 1, err


def test_import_coco_with_a_list_id(tmp_path: Path, capsys) -> None:
    coco = {"images": [{"id": [1], "file_name": "a.png"}], "annotations": []}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    args = [
        "data",
        "import",
        "coco",
        "--train",
        str(tmp_path / "c.json"),
        "--out",
        str(tmp_path / "o.json"),
    ]
    assert main(args) == 1
    assert "images[0]: 'id' must be an integer or a string" in capsys.readouterr().err


def test_search_query_and_captions_checked(package: Path, tmp_path: Path, capsys) -> None:
    assert main(["search", str(package), "--images", str(tmp_path), "--query", "  "]) == 2
    assert "--query: empty" in capsys.readouterr().err
    image = tmp_path / "i.png"
    for name, content, message in (
        ("latin1.txt", "caf\xe9 roof\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
        ("blank.txt", b"\n  \n", "no captions"),
    ):
        (tmp_path / name).write_bytes(content)
        args = ["search", str(package), "--image", str(image), "--captions", str(tmp_path / name)]
        assert main(args) == 2
        assert message in capsys.readouterr().err


def test_search_beside_a_read_only_model_caches_elsewhere(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workflows.commands import search

    model = _copy(package, tmp_path / "ro" / "model")
    writable = os.access
    monkeypatch.setattr(
        search.os, "access", lambda p, mode: writable(p, mode) and Path(p) != model.parent
    )  # as a read-only folder is for a user (root may write anywhere)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert search.cache_dir(model).parent == tmp_path / "cache" / "msa" / "search"


def test_data_synth_size_zero(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", str(tmp_path / "d"), "--size", "0"])
    assert exc.value.code == 2 and "--size: must be >= 32, got 0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_val_split_of_one_image_refused_before_ray(
    synth_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads((synth_data / "dataset.json").read_text())
    vals = [im for im in data["images"] if im["split"] == "val"]
    for im in vals[1:]:
        im["split"] = "train"
    (tmp_path / "one_val.json").write_text(json.dumps(data))
    cfg = _search_yaml(synth_data, tmp_path)
    done = _cli(capsys, "tune", str(cfg), "--set", f"data.json={tmp_path / 'one_val.json'}",
                "--results", str(tmp_path / "results"))  # fmt: skip
    assert done.returncode == 1
    _one_line_error(done.stderr, "the val split has 1 image(s)")
    assert not (tmp_path / "results").exists()


def test_evaluate_on_a_dataset_with_only_a_test_split(
    package: Path, synth_data: Path, tmp_path: Path, capsys
) -> None:
    data = json.loads((synth_data / "dataset.json").read_text())
    data["images"] = [{**im, "split": "test"} for im in data["images"][:20]]
    (tmp_path / "test_only.json").write_text(json.dumps(data))
    model = _copy(package, tmp_path / "model")
    only = tmp_path / "test_only.json"
    dataset = ["--dataset", str(only), "--images", str(synth_data / "images")]
    args = ["evaluate", str(model), "--split", "test", *dataset]
    assert main(args) == 0
    assert "mr" in capsys.readouterr().out


def test_exponent_without_a_dot_is_a_float(synth_data: Path, tmp_path: Path) -> None:
    raw = tiny_experiment(
        synth_data, search={"space": {"optim.lr": {"loguniform": ["1e-6", "1e-4"]}}}
    )
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(raw).replace("lr: 0.001", "lr: 5e-5"))
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == "5e-5"  # PyYAML: text
    exp = load_experiment(path, ["optim.head_lr=1E-4"])
    assert exp.optim.lr == 5e-5 and exp.optim.head_lr == 1e-4
    assert exp.space[0].args == (1e-6, 1e-4)
    with pytest.raises(ConfigError, match="optim.lr: expected a number, got 'fast'"):
        load_experiment(path, ["optim.lr=fast"])


def test_failing_train_is_one_line_and_not_retried() -> None:
    """The worker's deterministic error is found under Train's wrapper (unit: no cluster)."""
    from msa_model.checkpoint import CheckpointError
    from workflows.runtime.fatal import RepeatedError, deterministic

    class WorkerGroupError(RuntimeError):
        def __init__(self, failures: dict) -> None:
            super().__init__("350 lines")
            self.worker_failures = failures

    cause = CheckpointError("weights.pt: not a checkpoint")
    assert deterministic(WorkerGroupError({0: cause})) is cause
    again = RepeatedError("CheckpointError: weights.pt (an earlier attempt failed so; not retried)")
    assert deterministic(RuntimeError("x").with_traceback(None)) is None
    assert deterministic(WorkerGroupError({0: again})) is again
