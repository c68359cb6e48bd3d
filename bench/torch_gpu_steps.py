"""PyTorch's side of `deno task gpu-report`: training steps of the reference module trees
(tests/fixtures/d2l_nets.py, the same trees and state-dict names as models/zoo.ts) on the CUDA
GPU, eager FP32 with TF32 off, timed as our Trainer's steps are: a batch of 1x28x28 uint8 images
already on the GPU, scaled to [0, 1] and resized bilinearly (align_corners=False) to the recipe's
size, forward, cross-entropy, backward, plain SGD at the recipe's learning rate.

Reads a JSON list of jobs on stdin ({model, batch, resize, steps, lr}); prints one JSON line per
job: {model, examples_per_sec, peak_bytes} or {model, error}. The first stderr line says which
torch and GPU ran.
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
import d2l_nets  # noqa: E402


def steps(job, device):
    torch.manual_seed(0)
    net = d2l_nets.d2l_init(d2l_nets.build(job["model"])).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=job["lr"])
    batch, size = job["batch"], job["resize"]
    images = torch.randint(0, 256, (batch * (job["steps"] + 1), 1, 28, 28), dtype=torch.uint8,
                           device=device)
    labels = torch.randint(0, 10, (batch * (job["steps"] + 1),), device=device)

    def step(i):
        x = images[i * batch:(i + 1) * batch].float().div_(255)
        if size != 28:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), labels[i * batch:(i + 1) * batch])
        loss.backward()
        opt.step()
        return loss

    step(job["steps"])  # warm-up: cuDNN's algorithm choice, allocator
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(job["steps"]):
        loss = step(i)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if not torch.isfinite(loss):
        raise RuntimeError(f"loss {loss.item()}")
    return {
        "model": job["model"],
        "examples_per_sec": batch * job["steps"] / seconds,
        "peak_bytes": torch.cuda.max_memory_allocated(),
    }


def main():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}, TF32 off",
          file=sys.stderr)
    for job in json.load(sys.stdin):
        try:
            out = steps(job, device)
        except Exception as e:  # one model's failure must not hide the others
            out = {"model": job["model"], "error": str(e).splitlines()[0][:200]}
        print(json.dumps(out), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
