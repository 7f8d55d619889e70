"""What a search shows of each trial: its name on progress lines, a narrow progress table,
TensorBoard runs with HParams, and results files with relative paths."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from ray.tune.experiment import Trial
from tensorboardX.proto import event_pb2
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

from msa_model.session import LoopSession
from msa_model.training import train
from tests.conftest import tiny_experiment
from workflows.cli import build_parser
from workflows.experiment import SEARCH_SPACES, load_experiment, parse_experiment
from workflows.results.paths import relative_to_results, resolve_in_results
from workflows.runtime.launch import run_spec
from workflows.runtime.reporter import (
    TrialLines,
    abbreviate,
    final_console,
    is_verbose,
    progress_reporter,
    search_console,
)
from workflows.runtime.tensorboard import TuneTensorBoard


def _events(folder: Path) -> list[event_pb2.Event]:
    """Every event of a TensorBoard run folder (TFRecord: length, crc, data, crc)."""
    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            events.append(event_pb2.Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4
    return events


def test_tensorboard_run_per_trial_with_hparams(tmp_path: Path) -> None:
    board = TuneTensorBoard(tmp_path, "demo", ["val_mr", "val_mr_best"])
    config = {"optim.lr": 0.01, "model.image.num_scales": 2, "loss.global_loss": "infonce"}
    trials = [Trial("demo", config=config, trial_id=i, stub=True) for i in ("1e540e59", "2ab")]
    for trial in trials:
        board.on_trial_start(0, trials, trial)
    for epoch, score in [(1, 10.0), (2, 12.5)]:
        result = {"epoch": epoch, "val_mr": score, "val_mr_best": score, "train_loss": 3.0}
        board.on_trial_result(epoch, trials, trials[0], result)
    board.on_trial_complete(2, trials, trials[0])
    board.on_trial_error(0, trials, trials[1])
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["demo_1e540e59", "demo_2ab"]

    (root,) = [v for e in _events(tmp_path) for v in e.summary.value]  # one experiment for all
    experiment = HParamsPluginData.FromString(root.metadata.plugin_data.content).experiment
    assert [h.name for h in experiment.hparam_infos][: len(config)] == list(config)
    assert [m.name.tag for m in experiment.metric_infos] == [
        "val/val_mr", "val/val_mr_best", "test/test_mr"
    ]  # fmt: skip
    events = _events(tmp_path / "demo_1e540e59")
    summaries = {v.tag: (e.step, v) for e in events for v in e.summary.value}
    start = HParamsPluginData.FromString(
        summaries["_hparams_/session_start_info"][1].metadata.plugin_data.content
    ).session_start_info
    assert start.hparams["optim.lr"].number_value == 0.01
    assert start.hparams["loss.global_loss"].string_value == "infonce"
    scalars = [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value
               if v.HasField("simple_value")]  # fmt: skip
    assert (1, "val/val_mr", 10.0) in scalars and (2, "val/val_mr_best", 12.5) in scalars
    assert (2, "train/train_loss", 3.0) in scalars

    def end_status(trial_dir: str) -> int:
        (value,) = [v for e in _events(tmp_path / trial_dir) for v in e.summary.value
                    if v.tag == "_hparams_/session_end_info"]  # fmt: skip
        content = HParamsPluginData.FromString(value.metadata.plugin_data.content)
        return content.session_end_info.status

    assert (end_status("demo_1e540e59"), end_status("demo_2ab")) == (1, 2)  # success, failure


def test_abbreviated_columns_are_short_and_distinct() -> None:
    names = abbreviate(
        ["loss.lambda_mscma", "loss.csmmc_temperature", "model.image.dropout", "loss.dropout",
         "optim.lr"]
    )  # fmt: skip
    assert names == {
        "loss.lambda_mscma": "lambda_mscma",
        "loss.csmmc_temperature": "csmmc_temper",
        "model.image.dropout": "m.i.dropout",
        "loss.dropout": "l.dropout",
        "optim.lr": "lr",
    }


def test_progress_table_shows_searched_values_and_the_metric_only() -> None:
    from ray.tune.progress_reporter import _trial_progress_table

    exp = load_experiment(SEARCH_SPACES / "demo.yaml")
    reporter = progress_reporter(exp)
    trials = []
    for i in range(4):
        config = {d.key: d.extremes()[-1] for d in exp.space}
        trial = Trial("demo", config=config, trial_id=f"1e54{i}e59", stub=True,
                      trial_name_creator=lambda t: f"demo_{t.trial_id}")  # fmt: skip
        result = {"epoch": 3, "val_mr": 12.3456, "val_mr_best": 14.2, "time_total_s": 9.0,
                  "train_loss": 2.0, "config": config}  # fmt: skip
        trial.update_last_result(result)
        trials.append(trial)
    table = "\n".join(
        _trial_progress_table(
            trials,
            reporter._metric_columns,
            reporter._parameter_columns,
            max_column_length=reporter._max_column_length,
        )
    )
    header = table.splitlines()[1]
    columns = [c.strip() for c in header.strip("|").split("|")]
    expected = ["Trial name", "status", "loc", *abbreviate([d.key for d in exp.space]).values()]
    assert columns == [*expected, "epoch", "mr", "best"]
    assert max(len(line) for line in table.splitlines()) <= 150  # Ray's own: ~260


def test_progress_table_prints_a_choice_whole() -> None:
    from ray.tune.progress_reporter import _get_trial_info

    exp = load_experiment(SEARCH_SPACES / "rsicd_lite.yaml")  # global_loss: 15 characters
    reporter = progress_reporter(exp)
    config = {d.key: d.extremes()[0] for d in exp.space}
    trial = Trial("rsicd_lite", config=config, trial_id="1e540e59", stub=True)
    row = _get_trial_info(trial, list(reporter._parameter_columns), [],
                          max_column_length=reporter._max_column_length)  # fmt: skip
    assert "triplet_hardest" in row  # not cut to Ray's triplet_e2b0


def _finished(status: str, result: dict, config: dict, trial_id: str) -> Trial:
    trial = Trial("demo", config=config, trial_id=trial_id, stub=True,
                  trial_name_creator=lambda t: f"demo_{t.trial_id}")  # fmt: skip
    trial.update_last_result({**result, "config": config})
    trial.set_status(status)
    return trial


def test_console_without_verbose_is_one_line_per_finished_trial_and_the_best(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSA_VERBOSE", "0")  # restored after the test (--verbose sets it)
    exp = load_experiment(SEARCH_SPACES / "demo.yaml")
    console = search_console(exp)
    reporter = console["progress_reporter"]
    assert console["verbose"] == 1 and isinstance(reporter, TrialLines)  # no Ray table
    config = {d.key: d.extremes()[-1] for d in exp.space}
    epochs = exp.train.epochs
    done = _finished(Trial.TERMINATED, {"epoch": epochs, "val_mr_best": 14.25}, config, "1e540e59")
    pruned = _finished(Trial.TERMINATED, {"epoch": 1, "val_mr_best": 9.5}, config, "2ab")
    running = _finished(Trial.RUNNING, {"epoch": 1, "val_mr_best": 30.0}, config, "3cd")
    trials = [done, pruned, running]
    assert reporter.should_report(trials)
    reporter.report(trials, False)
    assert not reporter.should_report(trials)  # each finished trial once
    reporter.report(trials, True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"[msa] trial demo_1e540e59 COMPLETE after {epochs}/{epochs} "
                               "epochs: best val_mr 14.25 (")  # fmt: skip
    assert lines[1].startswith(f"[msa] trial demo_2ab PRUNED after 1/{epochs} epochs: best val_mr")
    assert lines[2].startswith("[msa] best trial demo_3cd: val_mr 30.00 (")
    assert len(lines) == 3

    assert build_parser().parse_args(["tune", "x.yaml", "--verbose"]).verbose
    assert is_verbose()  # --verbose: Ray's (narrow) tables
    assert type(search_console(exp)["progress_reporter"]).__name__ == "CLIReporter"
    assert type(final_console("val_mr")["progress_reporter"]).__name__ == "CLIReporter"


def test_final_stage_prints_one_line_per_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MSA_VERBOSE", raising=False)
    reporter = final_console("val_mr")["progress_reporter"]
    result = {"final_epoch": 2, "val_mr": 61.111, "test_mr": 50.0, "test_examples": "[...]"}
    reporter.report([_finished(Trial.TERMINATED, result, {}, "4ef")], True)
    assert capsys.readouterr().out == (
        "[msa] final run demo_4ef COMPLETE: epoch 2, val mr 61.11, test mr 50.00\n"
    )


class _Lines(LoopSession):
    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)


def test_progress_lines_name_the_trial(synth_data: Path) -> None:
    exp = parse_experiment(tiny_experiment(synth_data, train={"epochs": 1, "batch_size": 16}))
    session = _Lines()
    train(run_spec(exp, label="tiny 1e540e59"), session)
    assert [line.split("  ")[0] for line in session.lines] == ["[tiny 1e540e59] epoch 1/1"]
    assert run_spec(exp).name == "tiny"  # msa train keeps the experiment's name


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/r/demo/ray/trials/demo_1/checkpoint_000002", "ray/trials/demo_1/checkpoint_000002"),
        ("/shared/ray/demo/trials/x", "/shared/ray/demo/trials/x"),  # --storage elsewhere
        ("s3://bucket/demo/trials/x", "s3://bucket/demo/trials/x"),
        (None, None),
    ],
)
def test_paths_in_results_files_are_relative(path: str | None, expected: str | None) -> None:
    assert relative_to_results(path, "/r/demo") == expected
    if path is not None:
        assert resolve_in_results(expected, "/r/demo") == path
