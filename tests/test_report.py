"""report.py: the page is self-contained, and a real headless Chromium shows, filters, searches and
pages 10,000 completions and the per-problem results."""

import json
import os
import random
import shutil

import pytest

from trl_grpo.observe import report

NEEDS_BROWSER = "headless Chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"


def _synthetic_run(folder, n=10_000, groups_per_step=4, g=4):
    """A run folder as train.py leaves it, with ``n`` completions over many steps."""
    rng = random.Random(0)
    folder.mkdir()
    per_step = groups_per_step * g
    with open(folder / "completions.jsonl", "w") as f:
        for i in range(n):
            step, group, fmt = 1 + i // per_step, (i % per_step) // g, rng.choice([0.0, 0.5, 1.0])
            answer = f"= {i + 1}</think><answer>\\boxed{{{i + 1}}}</answer>" if fmt else "..."
            row = {
                "step": step,
                "prompt_index": i // g,
                "group": group,
                "length": rng.randint(5, 48),
                "completion": f"needle-{i} {answer}",
                "rewards": {"format_reward": fmt, "accuracy_reward": 1.0 if fmt == 1.0 else 0.0},
                "advantage": rng.uniform(-1, 1),
                "truncated": fmt == 0.0,
            }
            if i % g == 0:
                row["prompt"] = f"<|im_start|>user\nWhat is {i} + 1?<|im_end|>\n<|im_start|>assistant\n<think>"
            f.write(json.dumps(row) + "\n")
    (folder / "run_config.json").write_text(
        json.dumps({"args": {"model_id": "embedded", "max_steps": 625}, "device": "cpu"})
    )
    state = {"steps": 625, "attempts": [{"train_wall_s": 60}], "sft": {"steps": 30, "train_wall_s": 120}}
    (folder / "run_state.json").write_text(json.dumps(state))
    preflight = {
        "verdict": "no_signal",
        "format_reward_mean": 0.0,
        "format_distribution": {"0.0": 32},
        "accuracy_mean": 0.0,
    }
    preflight.update(
        zero_variance_group_fraction=1.0,
        truncated_fraction=0.66,
        seconds_per_step=10.0,
        problems=["100% of groups score the same"],
    )
    (folder / "preflight.json").write_text(json.dumps(preflight))
    after = {**preflight, "verdict": "ok", "zero_variance_group_fraction": 0.25, "problems": []}
    after["sampled_from"] = "the model after 30 cold-start steps"
    (folder / "preflight_after_sft.json").write_text(json.dumps(after))
    return str(folder)


def _results(tmp_path):
    """A base and a trained evaluation of the same 4 problems: one flips up, one down."""
    paths = []
    for label, rewards in (("base", [0.0, 1.0, 0.0, 1.0]), ("trained", [1.0, 1.0, 0.0, 0.0])):
        records = [
            {"prompt": f"<|im_start|>user\nWhat is {i}?<|im_end|>", "gold_answer": str(i), "reward": r}
            | {"extracted_answer": str(i) if r else "x", "format_reward": 1.0, "completion": "c"}
            for i, r in enumerate(rewards)
        ]
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(records))
        (tmp_path / f"{label}.summary.json").write_text(
            json.dumps({"model": label, "n": 4, "accuracy": sum(rewards) / 4})
        )
        paths.append(str(path))
    return paths


def test_the_page_is_self_contained_and_embeds_everything(tmp_path):
    run = _synthetic_run(tmp_path / "run", n=40)
    with open(report.write_report(run, _results(tmp_path))) as f:
        page = f.read()
    assert "<script src" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    assert '"verdict": "no_signal"' in page and "needle-3" in page and '"label": "trained"' in page


@pytest.mark.parametrize("text", ["</script><b>x", "<!--<script>", "</SCRIPT >", "\u2028</script"])
def test_no_text_in_a_completion_or_problem_can_break_out_of_the_page(tmp_path, text):
    run = _synthetic_run(tmp_path / "run", n=4)
    with open(tmp_path / "run" / "completions.jsonl", "a") as f:
        row = {"step": 9, "prompt_index": 99, "group": 0, "length": 3, "completion": text, "prompt": text}
        f.write(json.dumps(row | {"rewards": {}, "truncated": False}) + "\n")
    with open(report.write_report(run)) as f:
        page = f.read()
    script = page[page.index("const D = ") :]
    script = script[: script.index("</script>")]
    assert "<" not in script.split("const D = ", 1)[1].split(";\n", 1)[0]  # the data holds no "<" at all
    data = json.loads(script.split("const D = ", 1)[1].split(";\n", 1)[0])
    assert data["completions"][-1]["completion"] == text and data["prompts"]["99"] == text  # read back intact


def _row_file(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return str(path)


def test_results_are_paired_by_problem_not_position(tmp_path):
    base, trained = _results(tmp_path)
    with open(trained) as f:
        shuffled = json.load(f)[::-1]
    reordered = _row_file(tmp_path, "reordered.json", shuffled)
    data = report.collect(_synthetic_run(tmp_path / "run", n=4), [base, reordered])
    first, second = data["results"][0]["records"], data["results"][1]["records"]
    assert [r["problem"] for r in first] == [r["problem"] for r in second] and len(first) == 4
    assert [r["reward"] for r in second] == [1.0, 1.0, 0.0, 0.0]  # each reward moved with its problem


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda t: _row_file(t, "other.json", [{"prompt": "user\nOther?", "reward": 1.0}]),
            "not over the same problems",
        ),
        (lambda t: str(t / "base.summary.json"), "is an evaluation summary"),
        (lambda t: _row_file(t, "obj.json", {"accuracy": 0.5}), "not an eval.py results file"),
        (lambda t: _row_file(t, "lines.json", [1, 2]), "not an eval.py results file"),
        (lambda t: str(t / "missing.json"), "cannot be read"),
    ],
)
def test_bad_results_files_are_one_line_errors(tmp_path, capsys, make, message):
    run = _synthetic_run(tmp_path / "run", n=4)
    base, _ = _results(tmp_path)
    assert report.main([run, base, make(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(run, "report.html"))  # nothing written


def test_a_damaged_completion_log_is_read_around(tmp_path):
    run = _synthetic_run(tmp_path / "run", n=8)
    with open(tmp_path / "run" / "completions.jsonl", "ab") as f:
        f.write(b'[1, 2]\n"text"\n{"step": 3, "completion": "caf\xc3')  # a non-object, a string, a cut character
    data = report.collect(run, [])
    assert len(data["completions"]) == 8 and data["unreadable_completion_lines"] == 3


@pytest.mark.parametrize("where", ["not_a_run", "out_is_a_folder", "unwritable"])
def test_report_writes_only_into_a_run_and_where_asked(tmp_path, capsys, where):
    run = _synthetic_run(tmp_path / "run", n=4)
    argv = [run]
    if where == "not_a_run":
        (tmp_path / "plain").mkdir()
        argv = [str(tmp_path / "plain")]
    elif where == "out_is_a_folder":
        argv += ["--out", str(tmp_path)]
    else:
        argv += ["--out", str(tmp_path / "no" / "such" / "folder" / "r.html")]
    assert report.main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not os.path.exists(tmp_path / "plain" / "report.html") and not os.path.exists(
        os.path.join(run, "report.html")
    )


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("TRL_GRPO_CI"):
            pytest.fail(f"CI must have {NEEDS_BROWSER}; .ci/run installs them")
        pytest.skip(f"needs {NEEDS_BROWSER}; CI installs them, this machine has none")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,2000"):
        options.add_argument(flag)
    b = webdriver.Chrome(service=Service(driver), options=options)
    yield b
    b.quit()


@pytest.mark.slow
def test_the_report_in_a_real_browser(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    run = _synthetic_run(tmp_path / "run")
    path = report.write_report(run, _results(tmp_path))
    browser.get("file://" + path)
    cards = lambda: browser.find_elements(By.CSS_SELECTOR, "#cards .card")
    info = lambda: browser.find_element(By.ID, "page-info").text
    # Shown on load, no click; under a loaded machine the first render can land after get() returns.
    WebDriverWait(browser, 30).until(lambda _: len(cards()) == 50)
    assert len(cards()) == 50 and "page 1 of 200 (10000 of 10000 completions)" in info()
    assert "NO_SIGNAL" in browser.find_element(By.ID, "preflight-verdict").text
    after = browser.find_element(By.ID, "preflight-after-sft").text
    assert after.startswith("OK after the cold start (the model after 30 cold-start steps)") and "25%" in after
    subtitle = browser.find_element(By.ID, "subtitle").text
    assert "cold start 30 steps, 2.0 min · 625 GRPO steps, 1.0 min" in subtitle
    browser.find_element(By.ID, "next").click()
    assert "page 2 of 200" in info() and cards()[0].get_attribute("data-step") == "4"  # 16 per step: item 50 is step 4
    Select(browser.find_element(By.ID, "filter-truncated")).select_by_value("yes")
    truncated = [c.get_attribute("data-truncated") for c in cards()]
    assert truncated and set(truncated) == {"1"} and "page 1 of" in info()
    Select(browser.find_element(By.ID, "filter-truncated")).select_by_value("")
    Select(browser.find_element(By.ID, "filter-step")).select_by_value("7")
    assert len(cards()) == 16 and {c.get_attribute("data-step") for c in cards()} == {"7"}
    Select(browser.find_element(By.ID, "filter-step")).select_by_value("")
    search = browser.find_element(By.ID, "search")
    search.send_keys("needle-9999")
    assert len(cards()) == 1 and "needle-9999" in cards()[0].text
    search.clear()
    search.send_keys("What is 8 + 1?")  # a prompt's text finds its group's completions
    assert len(cards()) == 4
    search.clear()
    Select(browser.find_element(By.ID, "filter-format")).select_by_value("1")
    Select(browser.find_element(By.ID, "filter-accuracy")).select_by_value("incorrect")
    assert browser.find_element(By.ID, "no-match").is_displayed()  # format 1 is always correct here
    rows = browser.find_elements(By.CSS_SELECTOR, "#problem-rows tr")
    assert len(rows) == 4 and [r.get_attribute("class") for r in rows] == ["up", "", "", "down"]
    browser.find_element(By.ID, "only-flipped").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#problem-rows tr")) == 2
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert os.path.getsize(tmp_path / "report.png") > 10_000
