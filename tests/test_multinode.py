"""Multi-node, as the README's torchrun recipe runs it: two torchrun "nodes" on 127.0.0.1, one process each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.processes import cli, run_together, torchrun_nodes
from tests.test_cli import CONFIG, TINY

NODES = ["--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.strategy=ddp", "--trainer.accelerator=cpu",
         "--trainer.logger=false"]


def nodes(*args: str, cwds: list[Path] | None = None, timeout: float = 240) -> tuple[list[int], list[str]]:
    """``seq2seq ARGS`` on two torchrun nodes started together; their exit codes and output."""
    codes, logs, _ = run_together(torchrun_nodes(2, *args, *NODES), cwds=cwds, timeout=timeout)
    return codes, logs


@pytest.fixture(scope="module")
def nodes_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("nodes")
    codes, logs = nodes("fit", "-c", str(CONFIG), *TINY, "--trainer.max_epochs=2", f"--trainer.default_root_dir={run}")
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    return run


def _lines(n: int = 101) -> list[str]:
    pool = ["", "25th of June, 2009", "3 mars 1998", "Jun 1, 1950", "Dienstag, 3. März 1998", "x" * 40]
    return [pool[i % len(pool)] + ("" if i % 3 else f" {i}") for i in range(n)]  # 101: the sampler pads


def _predict(src: Path, out: Path | str, ckpt: Path, root: Path) -> list[str]:
    return ["predict", "-c", str(CONFIG), "--ckpt_path", str(ckpt), f"--data.init_args.predict_path={src}",
            "--output", str(out), "--data.init_args.eval_batch_size=8", f"--trainer.default_root_dir={root}"]


def test_two_node_fit_checkpoints(nodes_run: Path) -> None:
    import torch

    found = list(nodes_run.rglob("last.ckpt"))
    assert len(found) == 1, found  # saved once, by global rank 0
    ckpt = torch.load(found[0], weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] > 0


def test_two_node_predict_equals_one_process(nodes_run: Path, tmp_path: Path) -> None:
    lines = _lines()
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ckpt = min(nodes_run.rglob("last.ckpt"))
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    # the two nodes and the one process, started together
    (*codes, code), (*logs, one_log), _ = run_together(
        [*torchrun_nodes(2, *_predict(src, two, ckpt, tmp_path / "two"), *NODES),
         cli(*_predict(src, one, ckpt, tmp_path / "one"), "--trainer.logger=false", "--trainer.accelerator=cpu")],
        timeout=480)  # the 240 s each had when they ran one after the other
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert code == 0, one_log[-3000:]
    rows = {k: [json.loads(r) for r in p.read_text(encoding="utf-8").splitlines()] for k, p in (("1", one), ("2", two))}
    assert len(rows["2"]) == len(lines) and [r["input"] for r in rows["2"]] == lines  # every input once, in order
    assert [r["output"] for r in rows["2"]] == [r["output"] for r in rows["1"]]
    for a, b in zip(rows["1"], rows["2"]):
        assert (a["score"] is None) == (b["score"] is None)
        if a["score"] is not None:
            assert b["score"] == pytest.approx(a["score"], abs=1e-4)  # float noise of other batch shapes
    assert not list(tmp_path.glob(".*.partial"))


def test_output_folder_not_shared_fails_before_predicting(nodes_run: Path, tmp_path: Path) -> None:
    """Each node runs in its own folder with a relative --output, as nodes with local disks would: rank 0
    cannot see rank 1's shard. Both stop at once, before predicting, naming the shard rank 0 looked for."""
    src = tmp_path / "in.txt"
    src.write_text("\n".join(_lines(20)) + "\n", encoding="utf-8")
    cwds = [tmp_path / "node0", tmp_path / "node1"]
    for cwd in cwds:
        cwd.mkdir()
    ckpt = min(nodes_run.rglob("last.ckpt"))
    codes, logs = nodes(*_predict(src, "out.jsonl", ckpt, Path("run")), "--sync_timeout=4", cwds=cwds)
    assert codes[0] != 0 and codes[1] != 0
    for log in logs:
        assert f"cannot read it at {cwds[0] / '.out.jsonl.rank1.partial'}" in log, log[-3000:]
        assert "file system that every node sees at the same path" in log
        assert "Predicting" not in log  # stopped before predicting anything
    assert not [p for cwd in cwds for p in cwd.glob("*out.jsonl*")]


def test_a_node_that_crashes_is_named(nodes_run: Path, tmp_path: Path) -> None:
    """Rank 1 exits mid-predict with no clean-up (as a crash or the OOM killer would): rank 0, on the
    other node, does not wait for it but stops at the end of its share with an error naming rank 1."""
    src = tmp_path / "in.txt"
    src.write_text("\n".join(_lines()) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    codes, logs = nodes(*_predict(src, out, min(nodes_run.rglob("last.ckpt")), tmp_path),
                        "--trainer.callbacks+=tests.helpers.failing.FailOnRank",
                        "--trainer.callbacks.init_args.mode=exit", timeout=180)
    assert codes[0] != 0 and codes[1] != 0
    assert "DistributedPredictError: distributed predict: rank 1 did not come to the 'written' step" in logs[0], \
        logs[0][-3000:]
    assert not out.exists()
