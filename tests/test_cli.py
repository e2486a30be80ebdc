"""The reproduction command on a tiny registered dummy experiment in a temporary results folder."""

import dataclasses
import json

import numpy as np
import pytest

from instabilities import cli, experiments
from instabilities.config import Config, ConfigError
from instabilities.experiments import registry as registry_mod


@dataclasses.dataclass(frozen=True)
class DummyConfig(Config):
    n: int = 5
    dataset: str = "teacher"


CALLS: list[str] = []


def _run_dummy(cfg: DummyConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    CALLS.append(cfg.config_hash())
    for i in range(cfg.n):
        if progress:
            progress(i + 1, cfg.n)
    return {"values": np.arange(cfg.n, dtype=float)}


def _run_resumable(cfg: DummyConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Counts to ``n`` with a checkpoint after every item; fails once after 3 items (an interruption)."""
    ckpt = experiments.checkpoint_path("resumable", cfg)
    done = json.loads(ckpt.read_text())["done"] if ckpt.exists() else []
    CALLS.append(f"start@{len(done)}")
    for i in range(len(done), cfg.n):
        if i == 3 and "interrupted" not in CALLS:
            CALLS.append("interrupted")
            raise RuntimeError("simulated interruption")
        done.append(i * i)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text(json.dumps({"done": done}))
    return {"values": np.asarray(done, dtype=float)}


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """A registry holding only the dummy experiments, and an empty results folder."""
    monkeypatch.setenv("INSTABILITIES_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("INSTABILITIES_DATA", str(tmp_path / "no_data"))
    monkeypatch.setattr(registry_mod, "_REGISTRY", {})
    monkeypatch.setattr(registry_mod, "_loaded", True)
    CALLS.clear()
    experiments.register(
        "dummy",
        chapter="full_scale",
        description="counts",
        configs={"ci": DummyConfig(scale="ci", n=3), "full": DummyConfig(scale="full", n=6)},
        run=_run_dummy,
    )
    return tmp_path / "results"


def test_run_status_stale_and_resume(registry, capsys):
    assert cli.main(["reproduce", "--scale", "full", "--device", "cpu", "--only", "dummy"]) == 0
    stored = experiments.stored("dummy")
    assert stored.status == "current" and list(stored["values"]) == list(range(6))
    prov = json.loads((registry / "full" / "dummy.json").read_text())
    assert prov["config_hash"] == DummyConfig(scale="full", n=6).config_hash() and prov["experiment"] == "dummy"
    assert (registry / "full" / "TIMINGS.md").read_text().count("| dummy | computed |") == 1
    cli.main(["status"])
    assert "current" in capsys.readouterr().out
    # resume: a current result is skipped, not recomputed
    assert cli.main(["reproduce", "--only", "dummy", "--device", "cpu"]) == 0
    assert len(CALLS) == 1
    assert "current, skipped" in (registry / "full" / "TIMINGS.md").read_text()
    # a config change makes the stored result stale: status says so, the plan reruns it, reproduce recomputes
    registry_mod._REGISTRY["dummy"] = dataclasses.replace(
        registry_mod._REGISTRY["dummy"],
        configs={"ci": DummyConfig(scale="ci", n=3), "full": DummyConfig(scale="full", n=7)},
    )
    assert experiments.stored("dummy").status == "stale"
    assert not experiments.stored("dummy").available and "STALE" in experiments.stored("dummy").banner()
    cli.main(["status"])
    assert "stale" in capsys.readouterr().out
    assert experiments.plan("full")[0]["action"] == "run"
    assert cli.main(["reproduce", "--dry-run"]) == 0
    assert len(CALLS) == 1  # the dry run ran nothing
    assert "STALE" in capsys.readouterr().out
    assert cli.main(["reproduce", "--device", "cpu"]) == 0
    assert len(CALLS) == 2 and experiments.stored("dummy").status == "current"


def test_missing_data_is_skipped_and_the_rest_still_runs(registry, capsys):
    experiments.register(
        "needs_cifar",
        chapter="x",
        description="needs CIFAR-10",
        configs={
            "ci": DummyConfig(scale="ci", dataset="cifar10"),
            "full": DummyConfig(scale="full", dataset="cifar10"),
        },
        run=_run_dummy,
    )
    assert "cifar10 not found" in experiments.missing_data(experiments.config("needs_cifar", "full"))[0]
    assert cli.main(["reproduce", "--device", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "skip  needs_cifar" in out and "run   dummy" in out
    assert cli.main(["reproduce", "--device", "cpu"]) == 1  # non-zero at the end ...
    out = capsys.readouterr().out
    assert "SKIPPED, data missing" in out and "INSTABILITIES_DATA" in out
    assert experiments.stored("dummy").available  # ... but the other experiment was reproduced
    assert experiments.stored("needs_cifar").status == "missing"


def test_failure_inside_an_experiment_resumes_from_its_checkpoint(registry, capsys):
    experiments.register(
        "resumable",
        chapter="x",
        description="checkpoints",
        configs={"ci": DummyConfig(scale="ci"), "full": DummyConfig(scale="full", n=6)},
        run=_run_resumable,
        resumable=True,
    )
    assert cli.main(["reproduce", "--only", "resumable", "--device", "cpu"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert experiments.stored("resumable").status == "missing"
    assert experiments.plan("full", ["resumable"])[0]["reason"].endswith("resumes from checkpoint")
    assert cli.main(["reproduce", "--only", "resumable", "--device", "cpu"]) == 0
    assert CALLS == ["start@0", "interrupted", "start@3"]
    assert list(experiments.stored("resumable")["values"]) == [i * i for i in range(6)]
    assert not experiments.checkpoint_dir("resumable", "full").exists()  # cleaned after storing


def test_unknown_experiment_is_a_clear_error(registry, capsys):
    assert cli.main(["run", "nope", "--device", "cpu"]) == 2
    assert "known: dummy" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown"):
        experiments.get("nope")


def test_ci_scale_run_command(registry):
    assert cli.main(["run", "dummy", "--scale", "ci", "--device", "cpu"]) == 0
    assert experiments.stored("dummy", "ci").available
    assert not (registry / "ci" / "TIMINGS.md").exists()  # only `reproduce` writes the timing table


def _run_slow_resumable(cfg: DummyConfig, device: str = "cpu", progress=None) -> dict[str, np.ndarray]:
    """Counts to ``n``, checkpointing every item and reporting progress; each item takes 0.05 s."""
    import time

    ckpt = experiments.checkpoint_path("slow", cfg)
    done = json.loads(ckpt.read_text())["done"] if ckpt.exists() else []
    CALLS.append(f"start@{len(done)}")
    for i in range(len(done), cfg.n):
        time.sleep(0.05)
        done.append(i)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text(json.dumps({"done": done}))
        if progress:
            progress(i + 1, cfg.n)
    return {"values": np.asarray(done, dtype=float)}


def _row_seconds(timings: str, name: str) -> float:
    row = next(line for line in timings.splitlines() if line.startswith(f"| {name} |"))
    return float(row.split("|")[3])


def test_time_budget_interrupts_and_the_same_command_continues(registry, capsys):
    experiments.register(
        "slow",
        chapter="x",
        description="slow, checkpointed",
        configs={"ci": DummyConfig(scale="ci"), "full": DummyConfig(scale="full", n=40)},
        run=_run_slow_resumable,
        resumable=True,
    )
    argv = ["reproduce", "--only", "dummy,slow", "--device", "cpu", "--time-budget", "0.5"]
    assert cli.main(argv) == cli.EXIT_TIME_BUDGET  # 40 items x 0.05 s do not fit in 0.5 s
    captured = capsys.readouterr()
    assert "INTERRUPTED by the time budget" in captured.out and "Run the same command again" in captured.err
    assert experiments.stored("dummy").available and not experiments.stored("slow").available
    timings = (registry / "full" / "TIMINGS.md").read_text()
    assert "| slow | interrupted: time budget (checkpoint kept, resumes; 1 part(s) so far) |" in timings
    assert experiments.plan("full", ["slow"])[0]["reason"].endswith("resumes from checkpoint")
    first = len(json.loads(experiments.checkpoint_path("slow", experiments.config("slow", "full")).read_text())["done"])
    assert 0 < first < 40
    rc, totals = 3, [_row_seconds(timings, "slow")]
    for _ in range(10):  # each call continues from the checkpoint; none starts from zero again
        rc = cli.main(argv)
        if rc == 0:
            break
        # an interrupted row shows the running total of all parts so far, not only the last part
        timings = (registry / "full" / "TIMINGS.md").read_text()
        totals.append(_row_seconds(timings, "slow"))
        so_far = experiments.attempts("slow", experiments.config("slow", "full"))
        assert f"{so_far['parts']} part(s) so far" in timings and totals[-1] == pytest.approx(
            so_far["seconds"], abs=0.06
        )
        assert totals[-1] > totals[-2] + 0.2
    assert rc == 0
    starts = [c for c in CALLS if c.startswith("start@")]
    assert starts[0] == "start@0" and "start@0" not in starts[1:] and len(starts) >= 2
    stored = experiments.stored("slow")
    assert list(stored["values"]) == list(range(40))
    # the recorded cost adds up the interrupted parts
    assert stored.provenance["parts"] == len(starts) and stored.provenance["wall_seconds"] >= 40 * 0.05
    assert not experiments.checkpoint_dir("slow", "full").exists()
    timings = (registry / "full" / "TIMINGS.md").read_text()
    assert "| dummy | current, skipped |" in timings and "| slow | computed |" in timings


def test_time_budget_must_be_positive(registry, capsys):
    assert cli.main(["reproduce", "--device", "cpu", "--time-budget", "0"]) == 2
    assert "--time-budget" in capsys.readouterr().err


def test_time_budget_alarm_stops_an_experiment_that_reports_no_progress(registry, monkeypatch, capsys):
    import time

    def silent(cfg, device="cpu", progress=None):
        CALLS.append("silent")
        time.sleep(5)  # never calls progress; the alarm must interrupt it
        return {"values": np.zeros(1)}

    experiments.register(
        "silent",
        chapter="x",
        description="no progress reports",
        configs={"ci": DummyConfig(scale="ci"), "full": DummyConfig(scale="full")},
        run=silent,
    )
    monkeypatch.setattr(cli, "ALARM_GRACE_SECONDS", 0.1)
    assert (
        cli.main(["reproduce", "--only", "silent", "--device", "cpu", "--time-budget", "0.2"]) == cli.EXIT_TIME_BUDGET
    )
    assert "not resumable, restarts" in capsys.readouterr().out
    assert not experiments.stored("silent").available


def test_timings_keep_current_results_of_earlier_invocations(registry):
    experiments.register(
        "other",
        chapter="x",
        description="counts too",
        configs={"ci": DummyConfig(scale="ci", n=2), "full": DummyConfig(scale="full", n=4)},
        run=_run_dummy,
    )
    assert cli.main(["reproduce", "--only", "dummy", "--device", "cpu"]) == 0
    assert cli.main(["reproduce", "--only", "other", "--device", "cpu"]) == 0
    timings = (registry / "full" / "TIMINGS.md").read_text()
    assert "| other | computed |" in timings
    assert "| dummy | current, not run by this invocation |" in timings  # not lost by the second invocation
    assert timings.count("| cpu (") >= 2  # each row names the device recorded in its provenance


# -- faults: corrupt result files, devices, invalid configs --------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_corrupt_result_is_reported_refused_and_forced(registry, capsys, damage):
    experiments.register(
        "other",
        chapter="x",
        description="counts too",
        configs={"ci": DummyConfig(scale="ci", n=2), "full": DummyConfig(scale="full", n=4)},
        run=_run_dummy,
    )
    assert cli.main(["reproduce", "--device", "cpu"]) == 0
    path = registry / "full" / "dummy.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    damaged = path.read_bytes()
    capsys.readouterr()
    # status: CORRUPT, and the experiments after it are still listed; no traceback
    assert cli.main(["status"]) == 0
    out, err = capsys.readouterr()
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "CORRUPT" in lines["dummy"] and "current" in lines["other"] and "Traceback" not in out + err
    # the chapter API reports it like a missing result, with the reason, and never raises
    st = experiments.stored("dummy")
    assert st.status == "corrupt" and not st.available and st.arrays == {} and st.reason
    assert "CORRUPT" in st.banner() and "--force" in st.banner()
    assert experiments.stored("other").available  # nothing else is lost
    # run refuses with one line naming --force, and leaves the file alone
    assert cli.main(["run", "dummy", "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "--force" in err and "CORRUPT" in err
    assert path.read_bytes() == damaged and len(CALLS) == 2
    # reproduce skips it with the same advice and reproduces the rest
    assert experiments.plan("full", ["dummy"])[0]["action"] == "skip"
    assert cli.main(["reproduce", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "SKIPPED" in out and "--force" in out and "Traceback" not in out and path.read_bytes() == damaged
    # --force overwrites it
    assert cli.main(["run", "dummy", "--device", "cpu", "--force"]) == 0
    assert experiments.stored("dummy").available and list(experiments.stored("dummy")["values"]) == list(range(6))
    assert experiments.stored("other").available


def _fake_cuda(monkeypatch, count: int) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")


@pytest.mark.parametrize("device,gpus", [("tpu", 0), ("cuda", 0), ("cuda:7", 2), ("cuda:", 2), ("gpu", 1)])
def test_unavailable_device_is_one_line_exit_2(registry, capsys, monkeypatch, device, gpus):
    _fake_cuda(monkeypatch, gpus)
    assert cli.main(["run", "dummy", "--device", device]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert repr(device) in err and "cpu" in err  # names the device asked for and those available
    assert ("cuda:1" in err) == (gpus == 2)
    assert CALLS == [] and experiments.stored("dummy").status == "missing"


def test_device_string_is_recorded_exactly(registry, monkeypatch):
    _fake_cuda(monkeypatch, 2)
    assert cli.main(["run", "dummy", "--device", "cuda:1"]) == 0
    prov = experiments.stored("dummy").provenance
    assert prov["device"] == "cuda:1" and prov["device_name"] == "Fake GPU"
    assert cli.main(["run", "dummy", "--device", "cpu", "--scale", "ci"]) == 0
    assert experiments.stored("dummy", "ci").provenance["device"] == "cpu"


def test_invalid_config_is_one_line_exit_2(registry, capsys, monkeypatch):
    def bad_run(cfg, device="cpu", progress=None):
        DummyConfig(scale="full", n=1).replace(scale="huge")  # raises ConfigError, as a bad config does
        return {}

    experiments.register(
        "bad",
        chapter="x",
        description="bad config",
        configs={"ci": DummyConfig(scale="ci"), "full": DummyConfig(scale="full")},
        run=bad_run,
    )
    assert cli.main(["run", "bad", "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert "FAILED, scale='huge' is unknown" in out and "Traceback" not in out + err

    def broken_registry():
        raise ConfigError("experiment 'x': eta=-1 must be a finite number > 0.")

    monkeypatch.setattr(registry_mod, "_load_all", broken_registry)
    for argv in (["list"], ["status"], ["run", "dummy", "--device", "cpu"]):
        assert cli.main(argv) == 2
        out, err = capsys.readouterr()
        assert err.strip() == "error: experiment 'x': eta=-1 must be a finite number > 0."


def test_status_says_what_made_a_result_stale(registry, capsys):
    assert cli.main(["run", "dummy", "--device", "cpu"]) == 0
    exp = registry_mod._REGISTRY["dummy"]
    registry_mod._REGISTRY["dummy"] = dataclasses.replace(exp, revision=1)  # the code's meaning changed
    cli.main(["status"])
    assert "STALE (code)" in capsys.readouterr().out
    registry_mod._REGISTRY["dummy"] = dataclasses.replace(
        exp, configs={"ci": DummyConfig(scale="ci", n=3), "full": DummyConfig(scale="full", n=9)}
    )
    cli.main(["status"])
    assert "STALE (config)" in capsys.readouterr().out
    assert "STALE (config)" in experiments.plan("full")[0]["reason"]
