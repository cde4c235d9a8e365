"""Tool-use demonstrations for SFT: the call's args read from the question, the episode built by stepping the
real environment (the result's tokens, and only they, masked out), a tool that answers wrong refused, a malformed
call counted, and the well-formed share of episode_stats by hand."""
import pytest

from cluster.config import ConfigError, load_job_config
from data.tasks import Task
from data.tokenizer import train_tokenizer
from rollout.types import FinishReason, Rollout
from tools.config import CallArgs, Demonstration, EpisodeConfig, ToolSpec
from tools.demonstrations import NoDemonstration, call_args, demonstration
from tools.environment import make_environments
from trainers.loops.alignment import episode_stats
from verifiers.types import Sample


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    text = ["What is 1234 + 5678 - 91? <tool>calculator: 1234 + 5678 - 91</tool><result>6821</result>\n#### 6821"] * 50
    return train_tokenizer(text, 320, tmp_path_factory.mktemp("tok"), 128)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_call_args_take_the_questions_longest_arithmetic_expression_or_the_question():
    question = "State the final answer to the following arithmetic problem: 9684 + 1475 - 8628 + 50 ="
    assert call_args(question, CallArgs.expression) == "9684 + 1475 - 8628 + 50"
    assert call_args("In 2024, what is (12 + 3) * 4 / 5?", CallArgs.expression) == "(12 + 3) * 4 / 5"
    assert call_args("  Where was Kalo Ven born? ", CallArgs.question) == "Where was Kalo Ven born?"
    with pytest.raises(ValueError, match="no arithmetic expression"):
        call_args("In 2024 there were 12 apples.", CallArgs.expression)


def test_a_demonstration_is_the_call_the_result_masked_and_the_answer_as_an_episode_has_them(tokenizer):
    [env] = make_environments(EpisodeConfig(tools=[ToolSpec("calculator")]), tokenizer, 1)
    task = Task(Sample(prompt="What is 1234 + 5678 - 91?", answer="6821"), [7, 8], "#### 6821")
    demo = demonstration(env, task, Demonstration("calculator", CallArgs.expression), tokenizer)
    call, result = ids(tokenizer, "<tool>calculator: 1234 + 5678 - 91</tool>"), ids(tokenizer, "<result>6821</result>")
    final = ids(tokenizer, "\n#### 6821") + [tokenizer.eos_token_id]
    assert demo.ids == call + result + final
    assert demo.mask == [1] * len(call) + [0] * len(result) + [1] * len(final)
    assert tokenizer.decode([t for t, m in zip(demo.ids, demo.mask) if m == 0]) == "<result>6821</result>"


def test_a_demonstration_whose_tool_answers_wrong_is_refused(tokenizer):
    cfg = EpisodeConfig(tools=[ToolSpec("tests.fixtures.tools:off_by_one", name="calculator")])
    [env] = make_environments(cfg, tokenizer, 1)
    task = Task(Sample(prompt="What is 1234 + 5678?", answer="6912"), [7], "")
    with pytest.raises(NoDemonstration, match="does not hold the answer '6912'"):
        demonstration(env, task, Demonstration(), tokenizer)


def test_a_turn_that_opens_a_call_out_of_format_is_a_malformed_call(tokenizer):
    [env] = make_environments(EpisodeConfig(tools=[ToolSpec("calculator")]), tokenizer, 1)
    env.reset(Task(Sample(prompt="q", answer="1"), [7], ""))
    step = env.step(ids(tokenizer, "<tool>calculator 1 + 2</tool>"))          # no colon
    assert step.done and step.reward_parts == {"malformed_calls": 1.0}
    env.reset(Task(Sample(prompt="q", answer="1"), [7], ""))
    assert env.step(ids(tokenizer, "#### 6821")).reward_parts == {}


def test_episode_stats_well_formed_share_counts_malformed_attempts_and_failed_calls():
    def episode(parts):
        return Rollout([1], [2, 3], [0.0, 0.0], FinishReason.eos, 0, response_mask=[1, 0], turns=2, env_parts=parts)
    stats = episode_stats([episode({"tool_calls": 2.0, "tool_errors": 1.0}), episode({"malformed_calls": 1.0}),
                           episode({"tool_calls": 1.0, "tool_errors": 0.0}), episode({})])
    assert stats["episode/tool_calls"] == pytest.approx(3 / 4)
    assert stats["episode/call_ok_share"] == pytest.approx(2 / 3)
    assert stats["episode/well_formed_share"] == pytest.approx(2 / 4)      # 2 ran of 3 calls + 1 malformed
    assert stats["episode/masked_share"] == pytest.approx(0.5)


def test_sft_demonstrations_need_the_tool_in_sfts_episode():
    job = load_job_config("configs/tools.yaml")
    assert job.sft.demonstrate == Demonstration("calculator", CallArgs.expression)
    with pytest.raises(ConfigError, match="sft.demonstrate.tool=calculator: must be one of sft.episode's tools"):
        load_job_config("configs/tools.yaml", ["sft.episode=null"])
    with pytest.raises(ConfigError, match="must be one of sft.episode's tools \\(calculator\\)"):
        load_job_config("configs/tools.yaml", ["sft.demonstrate.tool=search"])


def test_a_search_demonstration_looks_the_person_up_in_the_knowledge_base_and_answers_with_the_sentence(tokenizer):
    from data.knowledge import KnowledgeConfig, reading_tasks
    kb = {"people": 4, "practice_people": 8, "reading_fraction": 0.5, "context_chunks": 2, "seed": 3}
    [(sample, sentence)] = reading_tasks(KnowledgeConfig(**kb), "train_closed_book", 1)
    assert sample.prompt.endswith("?") and "[1]" not in sample.prompt        # closed book: the bare question
    cfg = EpisodeConfig(tools=[ToolSpec("search", options={"knowledge": kb, "top_k": 1})])
    [env] = make_environments(cfg, tokenizer, 1)
    demo = demonstration(env, Task(sample, [7], sentence),
                         Demonstration("search", CallArgs.question, "{solution}"), tokenizer)
    text = tokenizer.decode(demo.ids, skip_special_tokens=True)
    assert text.startswith(f"<tool>search: {sample.prompt}</tool><result>[1] ")
    assert text.endswith(f"</result>\n{sentence}") and sample.answer in sentence
    looked_up = tokenizer.decode([t for t, m in zip(demo.ids, demo.mask) if m == 0])
    person = sample.id.split("/")[0]
    assert person in looked_up and sentence in looked_up                  # the person's own document came back


def test_sft_keeps_the_tasks_with_a_demonstration_and_counts_the_dropped(tokenizer, caplog):
    from trainers.align_config import SftConfig
    from trainers.loops.sft import tool_demonstrations
    cfg = SftConfig(episode=EpisodeConfig(tools=[ToolSpec("tests.fixtures.tools:off_by_one", name="calculator")]),
                    demonstrate=Demonstration())
    tasks = [Task(Sample(prompt=f"What is {a} + 1?", answer=str(answer)), [7], "") for a, answer in
             ((10, 11), (20, 99), (30, 31))]                         # off_by_one answers a + 1: the second misses
    kept, demos = tool_demonstrations(tasks, cfg, tokenizer)
    assert kept == [tasks[0], tasks[2]] and len(demos) == 2
    assert tokenizer.decode(demos[1].ids, skip_special_tokens=True).endswith("<result>31</result>\n#### 31")
    assert "1 of 3 tasks dropped" in caplog.text
    with pytest.raises(ValueError, match="no task has a demonstration"):
        tool_demonstrations(tasks[1:2], cfg, tokenizer)
