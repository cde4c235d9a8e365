"""Every subcommand answers bad input with exit code 2 and one line naming the file, line or key; no traceback,
and nothing starts Ray (a missing path is caught while the config loads)."""
import json
import pathlib

import pytest

from cluster.cli import main

GOOD_PROBLEM = {"prompt": "What is 2 + 3?", "answer": "5"}


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Any of these inputs reaching Ray is a failure of the check."""
    import ray
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray was started for bad input"))


def one_error_line(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("tether: error: "), err
    return err


def jsonl(path: pathlib.Path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def test_yaml_syntax_error_names_the_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlearner:\n  num_ranks: [1, 2\n  lr: 3\n")
    err = one_error_line(capsys, "run", str(bad))
    assert str(bad) in err and "line 4" in err and "not valid YAML" in err


def test_a_missing_config(capsys):
    err = one_error_line(capsys, "run", "/nope.yaml")
    assert "config /nope.yaml does not exist" in err and "sampling" not in err


def test_a_folder_as_config(capsys, tmp_path):
    assert "is not a file" in one_error_line(capsys, "plan", str(tmp_path))


def test_a_config_that_is_a_list(capsys, tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    assert "must be a mapping" in one_error_line(capsys, "run", str(listed))


def test_a_missing_model_path_is_caught_before_ray(capsys, tmp_path):
    err = one_error_line(capsys, "run", "configs/tiny.yaml", f"runs_dir={tmp_path}", "model.path=/nonexistent")
    assert "model.path=/nonexistent: no such folder" in err
    err = one_error_line(capsys, "run", "configs/tiny.yaml", f"runs_dir={tmp_path}", f"model.path={tmp_path}")
    assert "not an HF model folder (no config.json)" in err


def test_a_missing_data_file_is_caught_before_ray(capsys, tmp_path):
    err = one_error_line(capsys, "run", "configs/tiny.yaml", f"runs_dir={tmp_path}",
                         "tasks.held_out={kind: file, name: /no/such.jsonl}")
    assert "tasks.held_out.name=/no/such.jsonl: no such file" in err
    err = one_error_line(capsys, "run", "configs/tiny.yaml", f"runs_dir={tmp_path}",
                         f"corpus.sources=[{{kind: file, name: {tmp_path}}}]")
    assert f"corpus.sources.0.name={tmp_path}: is a folder; a file is expected" in err


def test_generate_from_a_missing_checkpoint(capsys):
    assert "/nonexistent: no such model folder" in one_error_line(capsys, "generate", "/nonexistent", "hi")


def test_generate_prompts_file_errors(capsys, tmp_path):
    model_dir = tmp_path / "m"          # a folder that passes the checkpoint's check; the prompts are read next
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    bad = jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, "{not json"])
    err = one_error_line(capsys, "generate", str(model_dir), "--prompts", bad, "--out", str(tmp_path / "o.jsonl"))
    assert f"{bad}:2: not valid JSON" in err


def test_eval_of_a_missing_checkpoint(capsys):
    assert "/nonexistent: no such model folder" in one_error_line(capsys, "eval", "/nonexistent")


def test_verify_a_malformed_line_names_file_and_line(capsys, tmp_path):
    data = jsonl(tmp_path / "data.jsonl", [GOOD_PROBLEM, GOOD_PROBLEM, "{'single': 'quotes'}"])
    responses = jsonl(tmp_path / "r.jsonl", [{"response": "5"}] * 3)
    err = one_error_line(capsys, "verify", "--data", data, "--responses", responses, "--verifier", "math")
    assert f"{data}:3: not valid JSON" in err


@pytest.mark.parametrize("case", ["empty", "folder", "missing", "unreadable", "not an object", "not utf-8"])
def test_verify_bad_data_files(capsys, tmp_path, monkeypatch, case):
    responses = jsonl(tmp_path / "r.jsonl", [{"response": "5"}])
    data = tmp_path / "data.jsonl"
    if case == "empty":
        data.write_text("\n\n")
        expected = "holds no problems"
    elif case == "folder":
        data.mkdir()
        expected = "is a folder; a jsonl file of problems is expected"
    elif case == "missing":
        expected = "no such file"
    elif case == "unreadable":       # root reads any file, so the refusal is simulated where it would arise
        jsonl(data, [GOOD_PROBLEM])
        real = pathlib.Path.open
        monkeypatch.setattr(pathlib.Path, "open", lambda self, *a, **k: (_ for _ in ()).throw(
            PermissionError(13, "Permission denied")) if self == data else real(self, *a, **k))
        expected = "cannot read it (Permission denied)"
    elif case == "not an object":
        jsonl(data, [[1, 2]])
        expected = "data.jsonl:1: a JSON object is expected, not list"
    else:
        data.write_bytes(b"\xff\xfe{}\n")
        expected = "not UTF-8 text"
    err = one_error_line(capsys, "verify", "--data", str(data), "--responses", responses, "--verifier", "math")
    assert str(data) in err and expected in err


def test_verify_fewer_responses_than_problems(capsys, tmp_path):
    data = jsonl(tmp_path / "data.jsonl", [GOOD_PROBLEM, GOOD_PROBLEM])
    responses = jsonl(tmp_path / "r.jsonl", [{"response": "5"}])
    assert "has 2 problems but" in one_error_line(capsys, "verify", "--data", data, "--responses", responses,
                                                  "--verifier", "math")


def test_verify_a_response_line_of_the_wrong_shape(capsys, tmp_path):
    data = jsonl(tmp_path / "data.jsonl", [GOOD_PROBLEM])
    responses = jsonl(tmp_path / "r.jsonl", [{"responses": [{"txt": "5"}]}])
    err = one_error_line(capsys, "verify", "--data", data, "--responses", responses, "--verifier", "math")
    assert f"{responses}:1: expected" in err


def test_verify_a_problem_without_a_prompt(capsys, tmp_path):
    data = jsonl(tmp_path / "data.jsonl", [{"answer": "5"}])
    responses = jsonl(tmp_path / "r.jsonl", [{"response": "5"}])
    err = one_error_line(capsys, "verify", "--data", data, "--responses", responses, "--verifier", "math")
    assert f"{data}:1: needs a 'prompt' or 'question'" in err


def test_verify_an_unknown_verifier(capsys, tmp_path):
    data = jsonl(tmp_path / "data.jsonl", [GOOD_PROBLEM])
    responses = jsonl(tmp_path / "r.jsonl", [{"response": "5"}])
    err = one_error_line(capsys, "verify", "--data", data, "--responses", responses, "--verifier", "nope")
    assert "--verifier nope" in err


def test_import_gguf_of_a_missing_file(capsys, tmp_path):
    err = one_error_line(capsys, "import-gguf", "/no/such.gguf", str(tmp_path / "out"))
    assert "/no/such.gguf" in err


def test_plan_with_bad_resources(capsys):
    assert "--resources: 'CPU' is not NAME=NUMBER" in one_error_line(capsys, "plan", "configs/tiny.yaml",
                                                                      "--resources", "CPU")


@pytest.mark.parametrize("content, expected", [("just a string\n", "unknown config key 'just a string'"),
                                               (b"\xff\xfename: x\n", "not UTF-8"), ("x: !!set {a, b}\n", "c.yaml")])
def test_configs_that_are_not_mappings_of_text(capsys, tmp_path, content, expected):
    path = tmp_path / "c.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert expected in one_error_line(capsys, "run", str(path))


@pytest.mark.parametrize("config_json, expected", [("[]", "a JSON object is expected"), ("{not json", "not readable JSON")])
def test_a_checkpoint_with_a_broken_config_json(capsys, tmp_path, config_json, expected):
    (tmp_path / "config.json").write_text(config_json)
    err = one_error_line(capsys, "generate", str(tmp_path), "hi")
    assert "config.json" in err and expected in err


def test_a_verifier_module_that_fails_to_import(capsys, tmp_path, monkeypatch):
    (tmp_path / "brokenmod.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = jsonl(tmp_path / "data.jsonl", [GOOD_PROBLEM])
    responses = jsonl(tmp_path / "r.jsonl", [{"response": "5"}])
    err = one_error_line(capsys, "verify", "--data", data, "--responses", responses, "--verifier", "brokenmod:f")
    assert "brokenmod" in err and "SyntaxError" in err


def test_zero_workers_is_refused(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["verify", "--data", "x", "--responses", "y", "--verifier", "math", "--workers", "0"])
    assert exit_.value.code == 2 and "must be >= 1" in capsys.readouterr().err


def test_json_past_the_digit_limit_names_the_line(capsys, tmp_path):
    data = jsonl(tmp_path / "data.jsonl", [GOOD_PROBLEM, '{"prompt": "x", "answer": ' + "9" * 5000 + "}"])
    responses = jsonl(tmp_path / "r.jsonl", [{"response": "5"}] * 2)
    err = one_error_line(capsys, "verify", "--data", data, "--responses", responses, "--verifier", "math")
    assert f"{data}:2: not readable JSON" in err


def test_report_of_a_folder_that_is_not_a_run(capsys, tmp_path):
    assert "not a run folder (no config.yaml)" in one_error_line(capsys, "report", str(tmp_path))
