"""``loupe bench gpu`` rehearsed on the CPU with tiny models: every part runs in its own process and
reports real measurements; the static engine answers word for word as the plain one."""

from __future__ import annotations

import json
import subprocess
import sys

from loupe.core.vlm.device import cpu_has_native_bf16


def test_bench_gpu_runs_every_part_on_a_cpu(tmp_path, tiny_model_dir):
    for family in ("smolvlm", "qwen2vl", "llava-ov"):  # the checkpoints it would write: this run's tiny ones
        (tmp_path / f"{family}-tiny-random").symlink_to(tiny_model_dir(family))
    done = subprocess.run(
        [sys.executable, "-m", "loupe.apps.cli", "bench", "gpu", "--workdir", str(tmp_path), "--size", "tiny",
         "--new-tokens", "4", "--repeats", "1", "--lora-epochs", "2", "--out", str(tmp_path / "gpu.json")],
        capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(done.stdout)
    summary = result["summary"]
    assert summary["parts_failed"] == [], result["results"]
    assert result["machine"]["device"] == "cpu" and result["size"] == "tiny"
    assert [r["config"] for r in result["results"]["chat"]] == ["baseline_static", "loupe"]
    assert summary["app_ttft_512_s"] > 0 and summary["app_decode_tokens_per_s"] > 0
    assert summary["ttft_target_met"] is None  # the GPU targets are not judged on a CPU
    app_dtype = "bfloat16" if cpu_has_native_bf16() else "float32"  # what the app loads on this CPU
    assert {k: v for k, v in summary.items() if k.startswith("static_equal_")} == {
        f"static_equal_{family}_{app_dtype}": True for family in ("smolvlm", "qwen2vl", "llava-ov")}
    keeps = [row["keep"] for row in result["results"]["prune"]["rows"]]
    assert keeps == [1.0, 0.25, 0.1, 0.05] and summary["prefill_speedup_10pct_llava-ov"] > 0
    lora = result["results"]["lora"]
    assert lora["epochs"] == 2 and lora["last_loss"] < lora["first_loss"]  # it trained
    assert "bench gpu: lora" in done.stderr  # progress goes to stderr, the JSON alone to stdout
    assert json.loads((tmp_path / "gpu.json").read_text())["summary"] == summary  # rewritten after each part
