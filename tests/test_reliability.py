"""Issue 14 without a Ray cluster: config and YAML limits, results folders, the CLI's errors,
Ray's token file, the trust check of Tune's state, non-retried errors and the upload of
``msa submit``. Each test fails without its fix."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from msa_model.config import ConfigError, load_yaml
from tests.conftest import tiny_experiment, write_yaml
from workflows.cli import main
from workflows.errors import ResultsFolderError
from workflows.experiment import parse_experiment
from workflows.results.folders import (
    LOCK,
    MARKER,
    created_by,
    mark_created,
    prepare_results_dir,
)

# --- YAML and config (items 9, 12) -------------------------------------------------------------


def test_yaml_alias_bomb_refused_small_aliases_kept(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 9**9 = 387 million leaves from 300 bytes
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="bomb.yaml: YAML aliases expand to more than"):
        load_yaml(bomb)
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="recursive"):
        load_yaml(loop)
    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {lr: 0.001}\nother: *b\n")
    assert load_yaml(ok) == {"base": {"lr": 0.001}, "other": {"lr": 0.001}}


def test_non_utf8_yaml_names_file_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at offset 9"):
        load_yaml(path)


@pytest.mark.parametrize(
    "name", ["a\nb", "a\x00b", "x" * 101, "é", "a b", "..", "a/b", "", 7, "ok;rm"]
)
def test_experiment_names_are_plain_folder_names(synth_data: Path, name: object) -> None:
    with pytest.raises(ConfigError, match="name: must be 1-100 characters"):
        parse_experiment(tiny_experiment(synth_data, name=name))


def test_good_names_pass(synth_data: Path) -> None:
    for name in ("a", "rsicd_v2.1-b", "x" * 100):
        assert parse_experiment(tiny_experiment(synth_data, name=name)).name == name


def test_infinite_numbers_refused(synth_data: Path) -> None:
    exp = tiny_experiment(synth_data, search={"space": {"loss.margin": {"uniform": [0, 1e999]}}})
    with pytest.raises(ConfigError, match="search.space.loss.margin: uniform arguments must be "):
        parse_experiment(exp)
    with pytest.raises(ConfigError, match="optim.lr: expected a finite number, got inf"):
        parse_experiment(tiny_experiment(synth_data, optim={"lr": float("inf")}))
    with pytest.raises(ConfigError, match="optim.lr: expected a finite number, got nan"):
        parse_experiment(tiny_experiment(synth_data, optim={"lr": float("nan")}))


# --- results folders (items 1, 4) --------------------------------------------------------------


def test_results_folder_reused_or_replaced_only_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "run"
    prepare_results_dir(out, "msa train", resume=False, overwrite=False)
    assert created_by(out) == "msa train"
    (out / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds results: pass --resume"):
        prepare_results_dir(out, "msa train", resume=False, overwrite=False)
    prepare_results_dir(out, "msa train", resume=True, overwrite=False)
    assert (out / "metrics.json").is_file()  # resumed: kept
    prepare_results_dir(out, "msa train", resume=False, overwrite=True)
    # replaced: only the new marker (and this process's lock)
    assert sorted(p.name for p in out.iterdir()) == [LOCK, MARKER]
    with pytest.raises(ConfigError, match="exclude each other"):
        prepare_results_dir(out, "msa train", resume=True, overwrite=True)
    with pytest.raises(ConfigError, match="holds no run to resume"):
        prepare_results_dir(tmp_path / "none", "msa train", resume=True, overwrite=False)
    fresh = tmp_path / "fresh"
    mark_created(fresh, "msa tune")  # a run that stopped before writing anything
    prepare_results_dir(fresh, "msa tune", resume=False, overwrite=False)


def test_overwrite_never_deletes_a_folder_msa_did_not_create(tmp_path: Path) -> None:
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    with pytest.raises(ResultsFolderError, match="msa did not create it"):
        prepare_results_dir(mine, "msa train", resume=False, overwrite=True)
    assert (mine / "chapter1.tex").read_text() == "precious"


def test_resume_with_another_config_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    prepare_results_dir(out, "msa train", False, False)
    write_yaml(out / "experiment.yaml", {"name": "run", "optim": {"lr": 0.001}})
    other = parse_experiment({"name": "run", "optim": {"lr": 0.1}})
    with pytest.raises(ConfigError, match="differs from the given config"):
        prepare_results_dir(out, "msa train", True, False, other)
    same = parse_experiment({"name": "run", "optim": {"lr": 0.001}})  # defaults fill the rest
    prepare_results_dir(out, "msa train", True, False, same)


def test_msa_train_refuses_existing_results_before_ray(
    synth_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_yaml(tmp_path / "t.yaml", tiny_experiment(synth_data, name="t"))
    (tmp_path / "results" / "t").mkdir(parents=True)
    (tmp_path / "results" / "t" / "metrics.json").write_text("{}")
    assert main(["train", str(cfg), "--results", str(tmp_path / "results")]) == 1
    assert "msa did not create it" in capsys.readouterr().err
    args = ["train", str(cfg), "--results", str(tmp_path / "results"), "--overwrite"]
    assert main(args) == 1
    assert "msa did not create it" in capsys.readouterr().err
    assert (tmp_path / "results" / "t" / "metrics.json").is_file()


def test_demo_replaces_only_its_own_results(
    synth_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "demo"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    data = [f"data.json={synth_data / 'dataset.json'}", f"data.images={synth_data / 'images'}"]
    args = ["demo", "--results", str(tmp_path), *sum((["--set", s] for s in data), [])]
    assert main(args) == 1
    assert "msa did not create it" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    mark_created(tmp_path / "other", "msa tune")  # msa made it, but not the demo
    assert created_by(tmp_path / "other") == "msa tune"


# --- the CLI's error handler (item 12) ---------------------------------------------------------


def test_known_errors_are_one_line_debug_adds_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text("{truncated")
    assert main(["evaluate", str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("msa: error:") and "Traceback" not in err and len(err.splitlines()) == 1
    assert main(["--debug", "evaluate", str(ckpt)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "msa: error:" in err
    assert main(["evaluate", str(ckpt), "--debug"]) == 1  # after the verb too
    assert "Traceback" in capsys.readouterr().err


def test_truncated_checkpoint_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    import torch

    from msa_model.checkpoint import CheckpointError, load_model_state

    torch.save({"w": torch.zeros(1000)}, tmp_path / "model.pt")
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.pt: unreadable checkpoint file"):
        load_model_state(tmp_path)


def test_config_errors_exit_2_with_the_same_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: \xff\n")
    assert main(["train", str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"msa: error: {bad}: not UTF-8 text")


# --- Ray's token file (item 8) -----------------------------------------------------------------


def test_token_file_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workflows.runtime.cluster import secure_token_file

    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    secure_token_file(create=True)
    token = tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    assert len(token.read_text()) == 64
    token.chmod(0o644)  # as Ray writes it
    token.parent.chmod(0o755)
    secure_token_file(create=False)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    token.unlink()
    secure_token_file(create=False)  # joining a cluster: no token is invented
    assert not token.exists()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    secure_token_file(create=True)
    assert not token.exists()


# --- Tune's state is trusted only when the user alone could write it (item 6) ------------------


def test_state_written_by_others_refused(tmp_path: Path) -> None:
    from workflows.runtime.trusted import check_trusted

    state = tmp_path / "tune"
    (state / "trial_1").mkdir(parents=True)
    pickle = state / "trial_1" / "params.pkl"
    pickle.write_bytes(b"x")
    check_trusted(str(state))
    pickle.chmod(0o666)
    with pytest.raises(ResultsFolderError, match=r"params.pkl \(owner uid \d+, mode -rw-rw-rw-\)"):
        check_trusted(str(state))
    pickle.chmod(0o644)
    if os.getuid() == 0:  # only root can hand a file to another user
        os.chown(pickle, 4242, -1)
        with pytest.raises(ResultsFolderError, match="owner uid 4242"):
            check_trusted(str(state))
    check_trusted("s3://bucket/tune")  # a bucket cannot be checked: the README says trust it


# --- errors that would repeat are not retried (item 10) ----------------------------------------


def test_deterministic_error_recorded_and_not_trained_again(tmp_path: Path) -> None:
    from workflows.runtime.fatal import RECORD, RepeatedError, run_once

    calls = []

    def diverge() -> None:
        calls.append(1)
        raise FloatingPointError("non-finite loss nan at step 3")

    run_dir = str(tmp_path / "run")
    with pytest.raises(FloatingPointError):
        run_once(run_dir, diverge)
    with pytest.raises(RepeatedError, match="FloatingPointError: non-finite loss nan at step 3"):
        run_once(run_dir, diverge)
    assert len(calls) == 1
    assert json.loads((tmp_path / "run" / RECORD).read_text())["error"].startswith("Floating")


def test_transient_error_is_retried(tmp_path: Path) -> None:
    from workflows.runtime.fatal import deterministic, run_once

    calls = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("node lost")

    with pytest.raises(ConnectionError):
        run_once(str(tmp_path), flaky)
    run_once(str(tmp_path), flaky)
    assert len(calls) == 2
    group = RuntimeError("Training failed due to worker errors")
    group.worker_failures = {0: FloatingPointError("nan")}  # as ray.train.WorkerGroupError
    assert isinstance(deterministic(group), FloatingPointError)


# --- msa submit's upload (item 7) --------------------------------------------------------------


def _project(root: Path) -> Path:
    (root / "search_spaces").mkdir(parents=True)
    (root / "search_spaces" / "a.yaml").write_text("name: a\n")
    (root / "train.py").write_text("print(1)\n")
    for secret in (".env", ".env.local", "id_rsa", "key.pem", ".aws/credentials", ".ray/x"):
        (root / secret).parent.mkdir(parents=True, exist_ok=True)
        (root / secret).write_text("secret")
    (root / "env311" / "lib").mkdir(parents=True)  # a virtualenv under an unusual name
    (root / "env311" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "env311" / "lib" / "big.so").write_bytes(b"0" * 1000)
    return root


def test_upload_excludes_secrets_and_environments(tmp_path: Path) -> None:
    from ray._private.thirdparty.pathspec import PathSpec

    from workflows.runtime.jobs import DEFAULT_EXCLUDES, upload_listing

    wd = _project(tmp_path / "proj")
    listing = upload_listing(wd, DEFAULT_EXCLUDES)
    assert listing["files"] == 2  # a.yaml and train.py
    assert listing["bytes"] == len("name: a\n") + len("print(1)\n")
    assert listing["environments"] == ["/env311/"]
    spec = PathSpec.from_lines("gitwildmatch", DEFAULT_EXCLUDES + listing["environments"])
    for path in (".env", ".env.local", "id_rsa", "key.pem", ".aws/credentials", "env311/x"):
        assert spec.match_file(path), path


def test_upload_refuses_links_out_home_and_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workflows.runtime.jobs import DEFAULT_EXCLUDES, upload_listing

    wd = _project(tmp_path / "proj")
    (wd / "inside").symlink_to(wd / "train.py")
    upload_listing(wd, DEFAULT_EXCLUDES)  # a link staying inside is fine
    (wd / "ssh").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="ssh: a symbolic link leading out of the working dir"):
        upload_listing(wd, DEFAULT_EXCLUDES)
    upload_listing(wd, [*DEFAULT_EXCLUDES, "/ssh"])  # unless excluded
    monkeypatch.setenv("HOME", str(wd))
    with pytest.raises(ConfigError, match="refusing to upload / or the home folder"):
        upload_listing(wd, DEFAULT_EXCLUDES)
    with pytest.raises(ConfigError, match="refusing to upload / or the home folder"):
        upload_listing(Path("/"), DEFAULT_EXCLUDES)


# --- the search checks its data before Ray (item 10) -------------------------------------------


def test_search_checks_data_before_ray(
    synth_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tiny_experiment(synth_data, name="s", search={"num_samples": 1})
    exp["data"]["json"] = str(tmp_path / "typo.json")
    cfg = write_yaml(tmp_path / "s.yaml", exp)
    assert main(["tune", str(cfg), "--results", str(tmp_path / "results")]) == 1
    assert "typo.json" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # nothing created, no cluster started

    data = json.loads((synth_data / "dataset.json").read_text())
    for image in data["images"]:
        image["split"] = "train" if image["split"] == "test" else image["split"]
    (tmp_path / "no_test.json").write_text(json.dumps(data))
    exp["data"]["json"] = str(tmp_path / "no_test.json")
    write_yaml(cfg, exp)
    assert main(["tune", str(cfg), "--results", str(tmp_path / "results")]) == 1
    assert "split 'test' has no images" in capsys.readouterr().err
    import ray

    assert not ray.is_initialized()


def test_yaml_dump_of_an_experiment_round_trips(synth_data: Path, tmp_path: Path) -> None:
    """``--resume`` compares the stored experiment.yaml with the config: equal when unchanged."""
    from workflows.experiment import dump_experiment

    exp = parse_experiment(tiny_experiment(synth_data))
    dump_experiment(exp, tmp_path / "e.yaml", with_search=False)
    assert load_yaml(tmp_path / "e.yaml") == exp.to_dict(with_search=False)
    assert yaml.safe_load((tmp_path / "e.yaml").read_text())["name"] == "tiny"


# --- a resumed trial that had reached its last epoch keeps its history (item 3) ----------------


def test_trial_restarted_after_its_last_epoch_keeps_its_history(tmp_path: Path) -> None:
    """Tune restarts a trial that gave it no checkpoint with an empty result file; the loop,
    resumed at its last epoch, reports nothing. The run's own record has every epoch."""
    import pandas as pd

    from workflows.runtime.checkpoints import RunCheckpoints
    from workflows.runtime.records import _with_missing_epochs

    run = tmp_path / "trials" / "x-t1"
    store = RunCheckpoints(str(run), keep=1, metric="val_mr", mode="max")
    local = tmp_path / "local"
    local.mkdir()
    history = []
    for epoch, score in [(1, 30.0), (2, 50.0), (3, 40.0)]:
        history.append({"epoch": epoch, "val_mr": score})
        (local / "meta.json").write_text(json.dumps({"history": history}))
        store.save(str(local), epoch, {"val_mr": score})
    merged = _with_missing_epochs(pd.DataFrame(), str(run))  # what Tune kept after the restart
    assert merged["epoch"].tolist() == [1, 2, 3]
    assert merged["val_mr"].tolist() == [30.0, 50.0, 40.0]
    paths = merged["checkpoint_path"].tolist()
    assert paths[1:] == [f"{run}/checkpoint_000002", f"{run}/checkpoint_000003"]  # kept ones
    assert pd.isna(paths[0])
    tune_rows = pd.DataFrame({"epoch": [3], "val_mr": [40.0], "checkpoint_path": ["c3"]})
    merged = _with_missing_epochs(tune_rows, str(run))  # one report after a restart
    assert merged["epoch"].tolist() == [1, 2, 3] and merged["checkpoint_path"].iloc[2] == "c3"


def test_tied_trials_rank_the_same_however_tune_lists_them() -> None:
    """A resumed search lists its trials in another order: the table must not change."""
    import pandas as pd

    from workflows.results.trials import TrialRecord, trials_table

    def record(trial_id: str, scores: list[float]) -> TrialRecord:
        history = pd.DataFrame({"epoch": [1, 2], "val_mr": scores})
        return TrialRecord(trial_id, {"loss.margin": 0.1}, "TERMINATED", history=history)

    records = [record("b8", [20.0, 25.0]), record("a1", [25.0, 22.0]), record("c3", [30.0, 1.0])]
    first = trials_table(records, "val_mr", "max", 2)
    again = trials_table(records[::-1], "val_mr", "max", 2)
    assert first["trial_id"].tolist() == again["trial_id"].tolist() == ["c3", "a1", "b8"]
