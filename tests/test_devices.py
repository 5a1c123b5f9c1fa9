"""Every device present: the CPU always, CUDA and MPS where they exist. Encoding gives the CPU's numbers, one
training step runs, and every tensor stays on the model's device."""
import copy

import pytest
import torch

from helpers import assert_close
from minimt import SentenceEncoder
from minimt.data import Example
from minimt.devices import pick_device
from minimt.multitask import MultiTaskModel
from minimt.train import Run, TrainConfig, build_optimizer, train_step

DEVICES = ["cpu"] + ["cuda"] * torch.cuda.is_available() + ["mps"] * torch.backends.mps.is_available()
TEXTS = ["A man is playing a guitar.", "", "word " * 300, "short"]


def test_auto_picks_the_best_device_present():
    want = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device("auto").type == want


@pytest.mark.parametrize("device", DEVICES)
def test_encode_on_each_device(minilm_dir, minilm, device):
    enc = SentenceEncoder.from_pretrained(minilm_dir, device=device)
    t = enc.encode(TEXTS, convert_to_tensor=True)
    assert t.device.type == device and enc.device.type == device
    assert_close(t.cpu(), minilm.encode(TEXTS), 1e-5, f"encode on {device} vs cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_one_training_step_on_each_device(tiny_encoder, device):
    model = MultiTaskModel(tiny_encoder, {"topic": ["a", "b"]}, device=device)
    assert {p.device.type for p in model.parameters()} == {device}
    cfg = TrainConfig(lr=1e-3)
    opt = build_optimizer(model, cfg)
    before = model.heads.topic.out.weight.detach().clone()
    examples = [Example(f"x:{i}", t, {"topic": "ab"[i % 2]}) for i, t in enumerate(TEXTS)]
    loss = train_step(Run(cfg, model, opt, model.tasks), [(None, examples)])
    assert torch.isfinite(torch.tensor(loss)) and not torch.equal(before, model.heads.topic.out.weight)
    model.to("cpu")  # tiny_encoder is shared by other tests


def test_one_gpu_per_process_under_torchrun(monkeypatch):
    from minimt.io.distributed import local_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a machine with two GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device("cuda") == torch.device("cuda", 1)     # torchrun's second process on one machine
    assert local_device("cuda:0") == torch.device("cuda", 0)   # an explicit index is kept
    assert local_device("cpu") == torch.device("cpu")


if "cuda" in DEVICES:  # defined where a GPU is present (fp16 is CUDA only), so nothing here is ever skipped
    def test_float16_quality_gate_on_cuda(minilm_dir, minilm):
        """fp16: every embedding within cosine 0.9995 of float32, the bf16 gate."""
        texts = ["A man is playing a guitar.", "The stock market fell sharply today.", "word " * 300] * 20
        fp16 = SentenceEncoder.from_pretrained(minilm_dir, dtype="float16", device="cuda")
        assert (minilm.encode(texts) * fp16.encode(texts)).sum(1).min() >= 0.9995


def test_loss_scaling_changes_nothing_but_the_scale(tiny_encoder):
    """fp16's GradScaler multiplies the loss by 2**12 and divides the gradients back before clipping and AdamW:
    the step is the unscaled one (run here on the CPU in float32, where the arithmetic is the same)."""
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**12)):
        torch.manual_seed(0)
        model = MultiTaskModel(copy.deepcopy(tiny_encoder), {"topic": ["a", "b"]})  # the step changes the encoder
        cfg = TrainConfig(lr=1e-3, clip=0.5)
        examples = [Example(f"x:{i}", t, {"topic": "ab"[i % 2]}) for i, t in enumerate(TEXTS)]
        train_step(Run(cfg, model, build_optimizer(model, cfg), model.tasks, scaler=scaler), [(None, examples)])
        results.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for k in results[0]:
        assert_close(results[1][k], results[0][k], 1e-6, f"{k} after a scaled step vs an unscaled one")


@pytest.mark.parametrize("device, message", [
    ("cuda", "this PyTorch sees no CUDA GPU"), ("cuda:7", "CUDA GPU"), ("mps", "MPS .* is not available"),
    ("tpu", "is not a device name")])
def test_a_device_this_machine_lacks_is_refused_before_any_work(tmp_path, device, message):
    if device.split(":")[0] in DEVICES:  # present here: nothing to refuse; ask for one past the last instead
        device = f"{device.split(':')[0]}:{torch.cuda.device_count()}" if device.startswith("cuda") else "tpu"
    from minimt.train import train
    with pytest.raises(ValueError, match=message if device != "tpu" else "is not a device name"):
        train(TrainConfig(device=device, out_dir=str(tmp_path / "run"), sources=[{"path": "none", "text": "t",
                                                                                     "labels": {"a": "b"}}]))
    assert not (tmp_path / "run").exists(), "the run directory was made before the device was checked"


def test_fp16_training_is_refused_off_cuda(tmp_path):
    from minimt.train import train
    with pytest.raises(ValueError, match="float16 is for CUDA only"):
        train(TrainConfig(fp16=True, device="cpu", out_dir=str(tmp_path), sources=[]))
    with pytest.raises(ValueError, match="bf16 and fp16 exclude each other"):
        TrainConfig(fp16=True, bf16=True)


if "cuda" in DEVICES:
    def test_fp16_training_step_on_cuda(tiny_encoder):
        model = MultiTaskModel(tiny_encoder, {"topic": ["a", "b"]}, device="cuda")
        cfg = TrainConfig(lr=1e-3, fp16=True)
        opt = build_optimizer(model, cfg)
        examples = [Example(f"x:{i}", t, {"topic": "ab"[i % 2]}) for i, t in enumerate(TEXTS)]
        loss = train_step(Run(cfg, model, opt, model.tasks, scaler=torch.amp.GradScaler("cuda")), [(None, examples)])
        assert torch.isfinite(torch.tensor(loss))
        model.to("cpu")
