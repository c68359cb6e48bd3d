"""PyTorch's side of our training-step benchmarks: `deno task bench:train --vs-torch` (CPU) and
`deno task gpu-report` (CUDA).

Training steps of the reference module trees (tests/fixtures/d2l_nets.py, the same trees and
state-dict names as models/zoo.ts), timed as our Trainer's steps are: a batch of 1x28x28 uint8
images already on the device, scaled to [0, 1] and resized bilinearly (align_corners=False) to the
recipe's size, forward, cross-entropy, backward, plain SGD at the recipe's learning rate (no
momentum, no weight decay), in training mode (dropout on). One untimed step first (allocator,
oneDNN primitives, cuDNN's algorithm choice), then `steps` timed steps.

    /usr/bin/python3 bench/torch_steps.py [--device cpu|cuda] [--threads N] [--serve]

--device cpu (the default): eager FP32 on the CPU with `--threads` intra-op threads (default 2, the
size of our CPU adapter's machine) and PyTorch's defaults otherwise (oneDNN on).
--device cuda: eager FP32 on the GPU with TF32 off and cuDNN's benchmark mode; the timed steps end
with a synchronize.

Jobs are JSON objects {model, batch, resize, steps, lr}. Without --serve, stdin holds one JSON
list of jobs; with --serve, one job per line, answered as soon as it is read (so that a caller can
interleave its own timings with ours: a job with the same model, batch, resize and lr as the one
before reuses its network, already warmed up, and is only timed). Each job prints one JSON line:
{model, examples_per_sec, seconds, peak_bytes (CUDA only)} or {model, error}. The first stderr line
says which torch and device ran.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
import d2l_nets  # noqa: E402


class Steps:
    """One model's training steps on `device`: the network, its optimizer and a data set of
    `steps + 1` batches (the last one for the warm-up step)."""

    def __init__(self, job, device):
        self.key = (job["model"], job["batch"], job["resize"], job["lr"])
        self.device = device
        self.batch, self.size, self.count = job["batch"], job["resize"], job["steps"]
        torch.manual_seed(0)
        self.net = d2l_nets.d2l_init(d2l_nets.build(job["model"])).to(device).train()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=job["lr"])
        n = self.batch * (self.count + 1)
        self.images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, device=device)
        self.labels = torch.randint(0, 10, (n,), device=device)
        self.step(self.count)  # warm-up
        self.sync()

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self, i):
        b = self.batch
        x = self.images[i * b:(i + 1) * b].float().div_(255)
        if self.size != 28:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.net(x), self.labels[i * b:(i + 1) * b])
        loss.backward()
        self.opt.step()
        return loss

    def time(self, job):
        steps = job["steps"]
        if steps > self.count:
            raise ValueError(f"steps {steps} > the {self.count} batches set up")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for i in range(steps):
            loss = self.step(i)
        self.sync()
        seconds = time.perf_counter() - t0
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss {loss.item()}")
        out = {"model": job["model"], "examples_per_sec": self.batch * steps / seconds,
               "seconds": seconds}
        if self.device.type == "cuda":
            out["peak_bytes"] = torch.cuda.max_memory_allocated()
        return out


def run_job(job, device, current):
    """Times `job`, reusing `current` (a Steps or None) when it was set up for the same
    network; returns the output line and the Steps to keep."""
    key = (job["model"], job["batch"], job["resize"], job["lr"])
    try:
        if current is None or current.key != key or current.count < job["steps"]:
            current = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            current = Steps(job, device)
        return current.time(job), current
    except Exception as e:  # one model's failure must not hide the others
        return {"model": job["model"], "error": str(e).splitlines()[0][:200]}, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads (cpu only)")
    parser.add_argument("--serve", action="store_true", help="one job per stdin line")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}, TF32 off",
              file=sys.stderr, flush=True)
    else:
        torch.set_num_threads(args.threads)
        onednn = "oneDNN on" if torch.backends.mkldnn.is_available() else "no oneDNN"
        print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, {onednn}",
              file=sys.stderr, flush=True)
    current = None
    if args.serve:
        for line in sys.stdin:
            if line.strip():
                out, current = run_job(json.loads(line), device, current)
                print(json.dumps(out), flush=True)
        return
    for job in json.load(sys.stdin):
        # Each job from scratch; its network is freed before the next one is built.
        print(json.dumps(run_job(job, device, None)[0]), flush=True)


if __name__ == "__main__":
    main()
