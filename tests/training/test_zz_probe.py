import pytest, torch
from pathlib import Path
from training.conftest import PREVIOUS
from training.test_stages import _logits, _real_batch

@pytest.mark.parametrize("name", ["subaru","altair","deneb","polaris_m0","polaris_m1","rigel","vega"])
def test_show(stage_chain, name):
    r = stage_chain.get(name); print(name, [round(x,4) for x in r.losses])

def test_diff(stage_chain, train_records):
    from peft import PeftModel
    from hikari.models.load import load_model, load_processor
    for name in ["deneb", "vega"]:
        run, previous = stage_chain.get(name), stage_chain.get(PREVIOUS[name])
        merged_dir = Path(run.run_info["base_model"])
        batch = _real_batch(load_processor(merged_dir), train_records, run.config.task)
        ref = PeftModel.from_pretrained(load_model(previous.run_info["base_model"], dtype="fp32"), str(previous.out / "adapter")).eval()
        w = _logits(ref, batch)
        with ref.disable_adapter(): wo = _logits(ref, batch)
        m = _logits(load_model(merged_dir, dtype="fp32"), batch)
        print(name, (m-w).abs().max().item(), (w-wo).abs().max().item())
