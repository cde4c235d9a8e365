"""Bad input at the command line: one clear error line, exit code 2, nothing written."""
import json

import pytest

from cluster.cli import main
from modeling.model import check_causal_lm_dir


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plan_fits_on_this_machine(capsys):
    code, out, _ = run_cli(capsys, "plan", "configs/tiny.yaml")
    assert code == 0
    for role in ("learner", "rollout", "verifier", "reward_model", "reference", "critic"):
        assert role in out
    # the busiest stage is ppo: learners 2 x 1 + critic 2 x 1 + rollout 1 + verifier, reward model, reference 0.5 each
    assert "peak stage" in out and " 6.5 " in out and "fits" in out


def test_plan_reports_what_does_not_fit(capsys):
    code, out, _ = run_cli(capsys, "plan", "configs/tiny.yaml", "cluster.num_cpus=4")
    assert code == 1 and "DOES NOT FIT" in out and "needs 6.5 CPU at its busiest stage" in out
    code, out, _ = run_cli(capsys, "plan", "configs/tiny.yaml", "cluster.num_cpus=4", "stages=[tokenizer,pretrain,dpo]")
    assert code == 0 and "critic" not in out


def test_unknown_key_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "configs/tiny.yaml", f"runs_dir={tmp_path}", "pretrain.step=3")
    assert code == 2 and err.count("\n") == 1 and "pretrain.step" in err
    assert not any(tmp_path.iterdir())


def test_resume_without_a_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "configs/tiny.yaml", f"runs_dir={tmp_path}", "resume=true")
    assert code == 2 and "no run to resume" in err


def test_run_dir_holding_a_different_run(capsys, tmp_path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.yaml").write_text("name: tiny\nseed: 7\n")
    code, _, err = run_cli(capsys, "run", "configs/tiny.yaml", f"runs_dir={tmp_path}")
    assert code == 2 and "already holds a different run" in err


def test_a_moved_run_folder_is_the_same_run(tmp_path):
    """runs_dir is where a run lies, not what it is: a run moved to another folder can be resumed there."""
    import shutil

    from cluster.config import load_job_config, to_yaml
    from cluster.run_dir import RunDirError, check_run_dir
    first = load_job_config("configs/tiny.yaml", [f"runs_dir={tmp_path / 'a'}"])
    first.run_dir.mkdir(parents=True)
    (first.run_dir / "config.yaml").write_text(to_yaml(first))
    shutil.copytree(first.run_dir, tmp_path / "b" / "tiny")
    assert check_run_dir(load_job_config("configs/tiny.yaml", [f"runs_dir={tmp_path / 'b'}", "resume=true"])).root \
        == tmp_path / "b" / "tiny"
    with pytest.raises(RunDirError, match="already holds a different run"):
        check_run_dir(load_job_config("configs/tiny.yaml", [f"runs_dir={tmp_path / 'b'}", "seed=3"]))


def test_unreachable_ray_address(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "configs/tiny.yaml", f"runs_dir={tmp_path}", "cluster.address=127.0.0.1:1")
    assert code == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" in err


def test_model_dir_that_is_not_a_causal_lm(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        check_causal_lm_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    with pytest.raises(ValueError, match="BertForMaskedLM, not a causal LM"):
        check_causal_lm_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="'vit' model, not a causal LM"):
        check_causal_lm_dir(tmp_path)


def test_missing_and_empty_corpus(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "configs/tiny.yaml", f"runs_dir={tmp_path}", "stages=[tokenizer]",
                           f"corpus.sources=[{{kind: file, name: {tmp_path}/none.txt}}]")
    assert code == 2 and "corpus.sources.0.name" in err and "none.txt: no such file" in err
    (tmp_path / "empty.jsonl").write_text("")
    code, _, err = run_cli(capsys, "run", "configs/tiny.yaml", f"runs_dir={tmp_path}", "stages=[tokenizer]",
                           "name=empty", f"corpus.sources=[{{kind: file, name: {tmp_path}/empty.jsonl}}]")
    assert code == 2 and "corpus is empty" in err
    assert not (tmp_path / "empty" / "data").exists() and not (tmp_path / "empty" / "tokenizer").exists()
